"""Who lives in the synthetic world: body sizes by sub-type (cars, vans, trucks, buses; adults, children; bicycles
with riders) and cars parked along the kerbs.

Sizes are drawn per instance from overlapping per-sub-type ranges, so no single dimension names the class; sub-types
are not annotated (nuPlan has one `vehicle` category) but the renderers derive body shapes from the dimensions.
"""

from __future__ import annotations

import numpy as np

from drivepipe.utils import detmath
from drivepipe.world.roads import LANE_WIDTH_M, LaneGraph

# sub-type -> probability, (min, max) of length, width, height (m)
VEHICLE_TYPES = {
    "car": (0.66, (3.8, 5.0), (1.65, 1.95), (1.35, 1.75)),
    "van": (0.20, (4.6, 5.8), (1.85, 2.1), (1.75, 2.4)),
    "truck": (0.09, (6.3, 8.8), (2.2, 2.5), (2.6, 3.4)),
    "bus": (0.05, (9.5, 12.0), (2.45, 2.55), (2.9, 3.3)),
}
PARKED_TYPES = ("car", "van")       # kerb parking holds cars and vans
PEDESTRIAN_TYPES = {
    "adult": (0.85, (0.45, 0.85), (0.45, 0.8), (1.5, 1.95)),
    "child": (0.15, (0.3, 0.5), (0.3, 0.5), (0.95, 1.4)),
}
BICYCLE_TYPES = {"bicycle": (1.0, (1.55, 1.95), (0.5, 0.8), (1.35, 1.9))}
STATIC_SIZES = {"traffic_cone": (0.4, 0.4, 0.7), "barrier": (2.0, 0.5, 1.0), "czone_sign": (0.6, 0.3, 1.5),
                "generic_object": (1.0, 0.8, 1.0)}  # nominal, +-15 %
PARKED_INTRUSION_M = 0.25          # a parked car's body reaches this far over the kerb into the outer lane
_PARK_MARGIN_M = 10.0              # no parking this close to a lane end (crosswalks, turning traffic)


def draw_sizes(rng: np.random.Generator, types: dict, n: int, allowed: tuple[str, ...] | None = None) -> np.ndarray:
    """(n, 3) length, width, height (m): a sub-type per instance (by probability), then uniform in its ranges."""
    names = [k for k in types if allowed is None or k in allowed]
    p = np.array([types[k][0] for k in names])
    kind = rng.choice(len(names), size=n, p=p / p.sum())
    lo = np.array([[types[k][d][0] for d in (1, 2, 3)] for k in names])
    hi = np.array([[types[k][d][1] for d in (1, 2, 3)] for k in names])
    return lo[kind] + rng.random((n, 3)) * (hi[kind] - lo[kind])


def static_sizes(rng: np.random.Generator, category: str, n: int) -> np.ndarray:
    """(n, 3) sizes of static objects: nominal +-15 %."""
    return np.array(STATIC_SIZES[category]) * (1.0 + rng.uniform(-0.15, 0.15, (n, 3)))


def parked_cars(graph: LaneGraph, rng: np.random.Generator, fill: float, left_hand: bool,
                keep_clear: list[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Cars parked nose-to-tail along the kerb of every outer lane, half on the walkway.

    Walks each outer lane from `_PARK_MARGIN_M` to its end minus that margin in steps of one car plus a 0.8-2.5 m
    gap; each space holds a car with probability `fill` (else a 5-9 m gap follows); no car within 1.5 m of a
    `keep_clear` point (UTM, where pedestrians cross between the parked cars).

    Returns:
        poses (K, 3) x, y, yaw (UTM m, rad) of the box centres; sizes (K, 3) m.
    """
    side = 1.0 if left_hand else -1.0
    poses, sizes = [], []
    for e in np.flatnonzero(graph.outer & ~graph.is_connector).tolist():
        s = _PARK_MARGIN_M
        while True:
            size = draw_sizes(rng, VEHICLE_TYPES, 1, PARKED_TYPES)[0]
            if s + size[0] > graph.length[e] - _PARK_MARGIN_M:
                break
            x, y, h = (float(a[0]) for a in graph.pose_at(np.array([e]), np.array([s + size[0] / 2])))
            lat = side * (LANE_WIDTH_M / 2 + size[1] / 2 - PARKED_INTRUSION_M)
            xy = np.array([x - detmath.sin(h) * lat, y + detmath.cos(h) * lat])
            blocked = any(detmath.norm(xy - np.asarray(c)) < size[0] / 2 + 1.5 for c in keep_clear)
            if rng.random() < fill and not blocked:
                poses.append((xy[0], xy[1], h + rng.normal(0.0, 0.02)))
                sizes.append(size)
                s += size[0] + rng.uniform(0.8, 2.5)
            else:
                s += rng.uniform(5.0, 9.0)
    return np.array(poses).reshape(-1, 3), np.array(sizes).reshape(-1, 3)
