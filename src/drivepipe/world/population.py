"""Who lives in the synthetic world: body sizes by sub-type (cars, vans, trucks, buses; adults, children; bicycles
with riders), cars parked along the kerbs and construction work zones (traffic cones, signs, barriers) in the
parking strip of some kerbs, most of them beside the ego's route.

Sizes are drawn per instance from overlapping per-sub-type ranges, so no single dimension names the class; sub-types
are not annotated (nuPlan has one `vehicle` category) but the renderers derive body shapes from the dimensions.
"""

from __future__ import annotations

import numpy as np
import shapely

from drivepipe.utils import detmath
from drivepipe.world.roads import LANE_WIDTH_M, WALKWAY_WIDTH_M, City, LaneGraph, PedPath

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
ZONE_PARKED_OUT_M = 0.35           # in a work zone, parked cars (no vans) stand this far beyond the lane edge,
                                   # behind the cone line (a cone's outer face reaches <= 0.31 m past the edge)
_PARK_MARGIN_M = 10.0              # no parking this close to a lane end (crosswalks; a car leaving a turn still settling)
ZONE_CONES = (5, 9)                # cones per work zone (inclusive), in a line along the lane edge ...
ZONE_CONE_GAP_M = (2.5, 3.5)       # ... this far apart
CONE_INTRUSION_M = 0.15            # a cone's base reaches this far over the lane edge
ZONE_SIGN_AHEAD_M = (8.0, 14.0)    # the warning sign stands this far upstream of the first cone, on the kerb
ZONE_END_SIGN_P = 0.8              # probability of a second sign 3 m past the last cone
ZONE_BARRIER_P = 0.5               # ... of a barrier on the kerb behind the cones
ZONE_EQUIPMENT_P = 0.3             # ... of a generic object (equipment) on the kerb before the first cone
ZONE_MARGIN_M = 6.0                # no zone object this close to a lane end
ZONE_BESIDE_M = 12.0               # a kerb lane this close to the route (midpoint, parallel) is beside it


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


def mid_block_crossings(city: City, rng: np.random.Generator, n: int, half_road_m: float) -> list[PedPath]:
    """n straight paths across the street away from intersections, kerb to kerb (walkway edge to walkway edge),
    each at a random point of a random walkway long enough (`half_road_m`: carriageway half width); parked cars
    leave a gap there."""
    out, walks = [], [w for w in city.walkway_paths if detmath.norm(w.end - w.start) >= 30.0]
    for k in rng.choice(len(walks), size=n if walks else 0, replace=True).tolist():
        w = walks[k]
        t = (w.end - w.start) / detmath.norm(w.end - w.start)
        to_road = np.array([t[1], -t[0]])  # walkway paths have the road on their right
        centre = w.start + t * rng.uniform(0.3, 0.7) * detmath.norm(w.end - w.start)
        across = 2 * (half_road_m + WALKWAY_WIDTH_M / 2)
        out.append(PedPath(-1, centre + to_road * 1.0, centre + to_road * (across - 1.0)))
    return out


def pedestrian_paths(city: City, rng: np.random.Generator, n: int, crossings: list[PedPath]
                     ) -> tuple[list[PedPath], list[float]]:
    """Path and lateral slot (m left of the path) of n pedestrians: half on crosswalks, one on each mid-block
    `crossings` path, the rest on walkways; <= 3 per path in distinct slots (1 per mid-block crossing)."""
    n_cw = (n + 1) // 2
    paths = city.crosswalk_paths + city.walkway_paths + crossings
    picks = list(rng.choice(len(city.crosswalk_paths), n_cw, replace=True))
    n_walk = n - n_cw - len(crossings)
    picks += list(len(city.crosswalk_paths) + rng.choice(len(city.walkway_paths), n_walk))
    picks += list(len(paths) - len(crossings) + np.arange(len(crossings)))
    used: dict[int, int] = {}
    out, lats = [], []
    for p in picks:
        while used.get(p, 0) >= (1 if paths[p].fid < 0 else 3):
            p = (p + 1) % len(paths)
        # m left of the path; walkway slots keep clear of the kerb (parked cars, waiting crosswalk pedestrians)
        slots = (-0.8, 0.8, 0.0) if paths[p].intersection >= 0 or paths[p].fid < 0 else (0.95, 1.3, 1.6)
        lats.append(slots[used.get(p, 0)])
        used[p] = used.get(p, 0) + 1
        out.append(paths[p])
    return out, lats


def parked_cars(graph: LaneGraph, rng: np.random.Generator, fill: float, left_hand: bool,
                keep_clear: list[np.ndarray] = (), zones: list[tuple[int, float, float]] = (),
                zone_objects: list[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Cars parked nose-to-tail along the kerb of every outer lane, half on the walkway.

    Walks each outer lane from `_PARK_MARGIN_M` to its end minus that margin in steps of one car plus a 0.8-2.5 m
    gap; each space holds a car with probability `fill` (else a 5-9 m gap follows); no car within 1.5 m of a
    `keep_clear` point (UTM, where pedestrians cross between the parked cars). In a work zone's stretch of kerb
    (`zones`: (lane, s from, s to) m) the cars stand behind the cone line (ZONE_PARKED_OUT_M past the lane edge,
    cars only, no vans) and leave room for the zone's kerb objects (`zone_objects`: signs, barriers, equipment,
    UTM xy), as cars left parked along a kerb that a work crew coned off.

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
            in_zone = any(z == e and s0 < s + size[0] and s < s1 for z, s0, s1 in zones)
            if in_zone:
                size = draw_sizes(rng, VEHICLE_TYPES, 1, ("car",))[0]
            x, y, h = (float(a[0]) for a in graph.pose_at(np.array([e]), np.array([s + size[0] / 2])))
            inner = ZONE_PARKED_OUT_M if in_zone else -PARKED_INTRUSION_M  # inner face past the lane edge
            lat = side * (LANE_WIDTH_M / 2 + size[1] / 2 + inner)
            xy = np.array([x - detmath.sin(h) * lat, y + detmath.cos(h) * lat])
            blocked = any(detmath.norm(xy - np.asarray(c)) < size[0] / 2 + 1.5 for c in keep_clear) or in_zone and any(
                detmath.norm(xy - np.asarray(c)) < size[0] / 2 + 1.5 for c in zone_objects)
            if rng.random() < fill and not blocked:
                poses.append((xy[0], xy[1], h + rng.normal(0.0, 0.02)))
                sizes.append(size)
                s += size[0] + rng.uniform(0.8, 2.5)
            else:
                s += rng.uniform(5.0, 9.0)
    return np.array(poses).reshape(-1, 3), np.array(sizes).reshape(-1, 3)


def lanes_beside(graph: LaneGraph, pts: np.ndarray) -> list[int]:
    """Kerb (outer) lanes beside the polyline pts (R, 2) UTM m, either direction: midpoint within ZONE_BESIDE_M of it
    and parallel to it; ordered by where along pts they lie."""
    seg = np.diff(pts, axis=0)
    seg_len = np.maximum(detmath.norm_rows(seg), 1e-9)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    out = []
    for e in np.flatnonzero(graph.outer & ~graph.is_connector).tolist():
        x, y, h = (float(a[0]) for a in graph.pose_at(np.array([e]), np.array([graph.length[e] / 2])))
        t = np.clip(detmath.dot(np.array([x, y]) - pts[:-1], seg) / seg_len ** 2, 0.0, 1.0)
        d = detmath.norm_rows(pts[:-1] + t[:, None] * seg - np.array([x, y]))
        k = int(np.argmin(d))
        along = abs(detmath.cos(h) * seg[k, 0] + detmath.sin(h) * seg[k, 1]) / seg_len[k]
        if d[k] < ZONE_BESIDE_M and along > 0.9:
            out.append((cum[k] + t[k] * seg_len[k], e))
    return [e for _, e in sorted(out)]


def work_zones(graph: LaneGraph, rng: np.random.Generator, n: int, first: list[int], left_hand: bool,
               keep_clear: list[np.ndarray] = ()
               ) -> tuple[list[str], np.ndarray, np.ndarray, list[tuple[int, float, float]]]:
    """n static objects as construction work zones in the parking strip of kerb lanes: the lanes `first` in order,
    then the other kerb lanes in random order, one zone per lane, until n objects stand.

    A zone: a czone_sign on the kerb ZONE_SIGN_AHEAD_M upstream, then ZONE_CONES traffic cones in a line along the
    lane edge (their bases CONE_INTRUSION_M over it), then maybe a second sign, a barrier behind the cones and a
    generic object (equipment) on the kerb; the last zone is cut to the objects still wanted. Zones keep clear of
    the `keep_clear` points (UTM, where pedestrians cross between the parked cars) where they can, else leave a gap
    (no object within 1.5 m of one).

    Returns:
        categories (K,), poses (K, 3) x, y, yaw (UTM m, rad) of the box centres, sizes (K, 3) m, and the kerb stretch
        of each zone (lane, s from, s to) m (where parked cars stand behind the cone line).
    """
    side = 1.0 if left_hand else -1.0
    outer = [int(e) for e in rng.permutation(np.flatnonzero(graph.outer & ~graph.is_connector)) if e not in first]
    cats: list[str] = []
    poses, sizes, stretches = [], [], []
    for e in list(first) + outer:
        if len(cats) >= n:
            break
        line = shapely.LineString(graph.polyline(e))
        near = [shapely.Point(*c) for c in keep_clear]
        zone = _zone(graph, rng, e, [line.project(q) for q in near if line.distance(q) < LANE_WIDTH_M / 2 + 3.0])
        if zone is None:
            continue
        objects, stretch = zone
        placed = []
        for cat, s, out_m in objects:
            size = static_sizes(rng, cat, 1)[0]
            x, y, h = (float(a[0]) for a in graph.pose_at(np.array([e]), np.array([s])))
            lat = side * (LANE_WIDTH_M / 2 + out_m + size[1] / 2)
            xy = np.array([x - detmath.sin(h) * lat, y + detmath.cos(h) * lat])
            if all(detmath.norm(xy - np.asarray(c)) >= size[0] / 2 + 1.5 for c in keep_clear):
                placed.append((cat, (xy[0], xy[1], h + rng.normal(0.0, 0.05)), size))
        stretches.append(stretch)
        for cat, pose, size in placed[:n - len(cats)]:
            cats.append(cat)
            poses.append(pose)
            sizes.append(size)
    return cats, np.array(poses).reshape(-1, 3), np.array(sizes).reshape(-1, 3), stretches


def _zone(graph: LaneGraph, rng: np.random.Generator, lane: int, blocked: list[float]
          ) -> tuple[list[tuple[str, float, float]], tuple[int, float, float]] | None:
    """One work zone on `lane`: (category, s m, offset m of the object's inner face past the lane edge) per object,
    most important first, and its kerb stretch; placed clear (2.5 m) of the `blocked` arc lengths (mid-block
    crossings) where it fits; fewer cones on a short lane, None where even three do not fit."""
    length = float(graph.length[lane])
    ahead = float(rng.uniform(*ZONE_SIGN_AHEAD_M))
    gaps = rng.uniform(*ZONE_CONE_GAP_M, int(rng.integers(ZONE_CONES[0], ZONE_CONES[1] + 1)) - 1)
    while len(gaps) > 2 and ahead + gaps.sum() + 3.0 > length - 2 * ZONE_MARGIN_M:
        gaps = gaps[:-1]
    span = ahead + float(gaps.sum()) + 3.0
    grid = np.arange(ZONE_MARGIN_M, length - ZONE_MARGIN_M - span + 1e-9, 0.5)
    free = [s for s in grid if all(not b - span - 2.5 < s < b + 2.5 for b in blocked)]
    free = free or list(grid)  # else across a crossing: the objects in its way are left out (a gap in the line)
    if not free:
        return None
    u = float(rng.random())
    s_sign = float(free[int(u * len(free))])
    cones = s_sign + ahead + np.concatenate([[0.0], np.cumsum(gaps)])
    objects = [("czone_sign", s_sign, 0.3)] + [("traffic_cone", float(s), -CONE_INTRUSION_M) for s in cones]
    if rng.random() < ZONE_END_SIGN_P:
        objects.append(("czone_sign", float(cones[-1] + 3.0), 0.3))
    if rng.random() < ZONE_BARRIER_P:
        objects.append(("barrier", float(cones[len(cones) // 2]), 0.45))
    if rng.random() < ZONE_EQUIPMENT_P:
        objects.append(("generic_object", float(cones[0] - 2.0), 0.5))
    return objects, (lane, s_sign - 3.0, float(cones[-1]) + 6.0)
