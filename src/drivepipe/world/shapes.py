"""Body shapes of the synthetic actors as unions of boxes ("parts") inside the annotated box: cars and vans are a
body plus a glass cabin, trucks a cab plus a cargo box, buses one box, all on two dark axle blocks (the wheels);
bicycles a thin frame plus the rider; pedestrians legs plus torso; static objects one box.

The shape is a pure function of the category and the dimensions (the world does not annotate sub-types), and every
part lies inside the actor's box, so the annotation stays the tight bounding box. Shared by the camera and the lidar
renderers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivepipe.utils import detmath
from drivepipe.utils.geometry import global_to_ego_xy_yaw
from drivepipe.world_state import WorldSnapshot

# part templates: (x0, x1, y half-width fraction, z0, z1, material) in fractions of (length, width, height) of the
# actor box centred at 0 (x forward); materials index MATERIAL_SHADE / MATERIAL_REFLECT
PAINT, GLASS, TYRE, CLOTH, SKIN = range(5)
MATERIAL_SHADE = np.array([1.0, 0.35, 0.25, 1.0, 0.8])     # camera: factor on the actor's base colour
MATERIAL_REFLECT = np.array([1.0, 0.45, 0.35, 1.0, 0.9])   # lidar: factor on the actor's reflectivity
_AXLES = ((0.22, 0.40, 0.5, 0.0, 0.28, TYRE), (-0.40, -0.22, 0.5, 0.0, 0.28, TYRE))
_TEMPLATES = {
    "car": ((-0.5, 0.5, 0.5, 0.18, 0.58, PAINT), (-0.30, 0.18, 0.45, 0.58, 1.0, GLASS)) + _AXLES,
    "van": ((-0.5, 0.5, 0.5, 0.15, 0.55, PAINT), (-0.5, 0.30, 0.48, 0.55, 1.0, GLASS)) + _AXLES,
    "truck": ((0.27, 0.5, 0.48, 0.12, 0.85, PAINT), (-0.5, 0.25, 0.5, 0.12, 1.0, PAINT)) + _AXLES,
    "bus": ((-0.5, 0.5, 0.5, 0.1, 1.0, PAINT),) + _AXLES,
    "bicycle": ((-0.5, 0.5, 0.12, 0.0, 0.55, PAINT), (-0.22, 0.12, 0.5, 0.45, 1.0, CLOTH)),
    "pedestrian": ((-0.3, 0.3, 0.35, 0.0, 0.48, CLOTH), (-0.5, 0.5, 0.5, 0.48, 0.88, CLOTH),
                   (-0.3, 0.3, 0.3, 0.88, 1.0, SKIN)),
    "box": ((-0.5, 0.5, 0.5, 0.0, 1.0, PAINT),),
}
_KINDS = tuple(_TEMPLATES)
_PARTS = [np.array([p[:5] for p in _TEMPLATES[k]], float) for k in _KINDS]
_MATS = [np.array([p[5] for p in _TEMPLATES[k]], np.int64) for k in _KINDS]


@dataclass(frozen=True)
class Parts:
    """Boxes of all actors' parts in the ego frame: corners (P, 8, 3) m (0-3 bottom FL, RL, RR, FR; 4-7 top),
    owner (P,) index into snapshot.actors, material (P,) (PAINT, GLASS, ...)."""

    corners: np.ndarray
    owner: np.ndarray
    material: np.ndarray


def body_kind(category: str, length: float, height: float) -> str:
    """Shape template of an actor from its category and dimensions (m)."""
    if category == "vehicle":
        if length >= 9.0:
            return "bus"
        if length >= 6.0:
            return "truck"
        return "van" if height >= 1.8 else "car"
    if category in ("bicycle", "pedestrian"):
        return category
    return "box"


def actor_parts(snapshot: WorldSnapshot, max_distance_m: float = np.inf, detail_m: float = np.inf) -> Parts:
    """Part boxes of the actors whose centre is within `max_distance_m` of the ego (rear axle), ego frame; actors
    farther than `detail_m` are drawn as their plain box (level of detail for the camera)."""
    ego, actors = snapshot.ego, snapshot.actors
    if not actors:
        return Parts(np.zeros((0, 8, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    xy = np.array([[a.x, a.y] for a in actors], np.float64)
    yaw = np.array([a.yaw for a in actors], np.float64)
    xy_e, yaw_e = global_to_ego_xy_yaw(xy, yaw, ego.x, ego.y, ego.yaw)
    keep = np.flatnonzero(detmath.hypot(xy_e[:, 0], xy_e[:, 1]) <= max_distance_m)

    dist = detmath.hypot(xy_e[:, 0], xy_e[:, 1])
    kinds = [_KINDS.index(body_kind(actors[k].category, actors[k].length, actors[k].height) if dist[k] <= detail_m
                          else "box") for k in keep]
    n_parts = np.array([len(_PARTS[i]) for i in kinds], np.int64)
    owner = np.repeat(keep, n_parts)
    tmpl = np.concatenate([_PARTS[i] for i in kinds]) if kinds else np.zeros((0, 5))
    mats = np.concatenate([_MATS[i] for i in kinds]) if kinds else np.zeros(0, np.int64)
    dims = np.array([[a.length, a.width, a.height, a.z - a.height / 2] for a in actors])[owner]
    x0, x1 = tmpl[:, 0] * dims[:, 0], tmpl[:, 1] * dims[:, 0]
    hw = tmpl[:, 2] * dims[:, 1]
    local = np.stack([np.stack([x1, x0, x0, x1], 1), np.stack([hw, hw, -hw, -hw], 1)], axis=2)  # FL RL RR FR
    c, s = detmath.cos(np.asarray(yaw_e)[owner]), detmath.sin(np.asarray(yaw_e)[owner])
    foot = np.stack([c[:, None] * local[..., 0] - s[:, None] * local[..., 1],
                     s[:, None] * local[..., 0] + c[:, None] * local[..., 1]], axis=2) + xy_e[owner][:, None, :]
    corners = np.empty((len(owner), 8, 3))
    corners[:, :4, :2] = corners[:, 4:, :2] = foot
    corners[:, :4, 2] = (dims[:, 3] + tmpl[:, 3] * dims[:, 2])[:, None]
    corners[:, 4:, 2] = (dims[:, 3] + tmpl[:, 4] * dims[:, 2])[:, None]
    return Parts(corners, owner, mats)
