"""The scene's route as a centreline in the ego frame, from the map's baseline paths of the route's roadblocks
(`scene.roadblock_ids`: lane groups and lane-group connectors)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import LineString, Point

from drivepipe.mapdata import VectorMap
from drivepipe.utils import detmath
from drivepipe.utils.geometry import global_to_ego_xy_yaw

ROUTE_MAX_LENGTH_M = 150.0   # route polyline kept ahead of the ego
ROUTE_JOIN_TOL_M = 1.5       # baseline paths chain when one's end is this close to the next one's start
ROUTE_MAX_OFFSET_M = 10.0    # farther than this from every route path -> fall back to the ego's future path


def _fid(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RoutePaths:
    """The route's candidate centrelines (global frame) with what `route_in_ego` needs per sample, precomputed:
    lines (P) LineStrings, geoms (P,) the same as a numpy object array, coords (P) (K, 2) vertex arrays, arc (P)
    (K,) arc length at each vertex, start (P, 2) first points, start_dir (P, 2) first segments; `chains` memoises
    the paths that follow each start path."""

    lines: list[LineString]
    geoms: np.ndarray
    coords: list[np.ndarray]
    arc: list[np.ndarray]
    start: np.ndarray
    start_dir: np.ndarray
    chains: dict[int, list[int]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, lines: list[LineString]) -> RoutePaths:
        coords = [np.asarray(p.coords)[:, :2] for p in lines]
        arc = [np.concatenate([[0.0], np.cumsum(detmath.hypot(*np.diff(c, axis=0).T))]) for c in coords]
        geoms = np.empty(len(lines), dtype=object)
        geoms[:] = lines
        start = np.array([c[0] for c in coords]).reshape(-1, 2)
        start_dir = np.array([c[min(1, len(c) - 1)] - c[0] for c in coords]).reshape(-1, 2)
        return cls(lines, geoms, coords, arc, start, start_dir)

    def chain(self, k: int) -> list[int]:
        """Paths that follow path k (each starting within ROUTE_JOIN_TOL_M of the previous end, smallest turn
        first), until they add ROUTE_MAX_LENGTH_M: enough for any start point on k."""
        if k not in self.chains:
            tail, used, out, length = self.coords[k], {k}, [], 0.0
            while length < ROUTE_MAX_LENGTH_M:
                nxt = _next_path(self, used, tail)
                if nxt is None:
                    break
                used.add(nxt)
                out.append(nxt)
                tail = self.coords[nxt]
                length += self.arc[nxt][-1]
            self.chains[k] = out
        return self.chains[k]


def route_paths(vmap: VectorMap, roadblock_ids: Sequence[int]) -> RoutePaths:
    """Baseline paths (global) of the lanes in the route's lane groups and of the lane connectors in its lane
    group connectors; a connector without a baseline path contributes its own line."""
    ids = set(roadblock_ids)
    if not ids:
        return RoutePaths.of([])
    lanes = set()
    for f in vmap.layer("lanes_polygons"):
        if _fid(f.props.get("lane_group_fid")) in ids:
            lanes.update(v for v in (f.fid, _fid(f.props.get("lane_fid"))) if v is not None)
    connectors = {f.fid: f for f in vmap.layer("lane_connectors")
                  if _fid(f.props.get("lane_group_connector_fid")) in ids}
    paths, covered = [], set()
    for f in vmap.layer("baseline_paths"):
        lane, conn = _fid(f.props.get("lane_fid")), _fid(f.props.get("lane_connector_fid"))
        if lane in lanes or conn in connectors:
            paths.append(f.geometry)
            covered.add(conn)
    paths += [f.geometry for fid, f in connectors.items() if fid not in covered]
    return RoutePaths.of([p for p in paths if isinstance(p, LineString) and p.length > 0])


def route_in_ego(paths: RoutePaths, T_global_from_ego: np.ndarray) -> np.ndarray:
    """(R, 2) route centreline ahead of the ego, in the ego frame; (0, 2) when no path is usable.

    `paths` come from `route_paths`. Starts on the path nearest the ego that points the ego's way (within
    ROUTE_MAX_OFFSET_M), then follows paths whose start lies within ROUTE_JOIN_TOL_M of the current end (smallest
    turn first), up to ROUTE_MAX_LENGTH_M.
    """
    x0, y0 = float(T_global_from_ego[0, 3]), float(T_global_from_ego[1, 3])
    yaw0 = float(detmath.arctan2(T_global_from_ego[1, 0], T_global_from_ego[0, 0]))
    start = _start_path(paths, Point(x0, y0), yaw0)
    if start is None:
        return np.zeros((0, 2))
    k, s = start
    coords, arc = paths.coords[k], paths.arc[k]
    i = int(np.clip(np.searchsorted(arc, s, side="right") - 1, 0, len(arc) - 2))  # segment holding s
    t = (s - arc[i]) / max(arc[i + 1] - arc[i], 1e-12)
    first = coords[i] + t * (coords[i + 1] - coords[i])
    parts, length = [first[None], coords[i + 1:] if t < 1.0 else coords[i + 2:]], arc[-1] - s
    for nxt in paths.chain(k):
        if length >= ROUTE_MAX_LENGTH_M:
            break
        parts.append(paths.coords[nxt][1:])
        length += paths.arc[nxt][-1]
    xy = np.concatenate(parts, axis=0)
    local, _ = global_to_ego_xy_yaw(xy, np.zeros(len(xy)), x0, y0, yaw0)
    return local


def _start_path(paths: RoutePaths, ego: Point, yaw: float) -> tuple[int, float] | None:
    """(path, arc length of the ego's projection) of the nearest path within ROUTE_MAX_OFFSET_M whose direction
    at the projection is within 60 deg of the ego's heading (ties: the first path)."""
    if len(paths.lines) == 0:
        return None
    heading = np.array([detmath.cos(yaw), detmath.sin(yaw)])
    dist = shapely.distance(paths.geoms, ego)
    near = np.flatnonzero(dist < ROUTE_MAX_OFFSET_M)
    for k in near[np.argsort(dist[near], kind="stable")]:
        p = paths.lines[k]
        s = p.project(ego)
        a, b = p.interpolate(max(s - 0.5, 0.0)), p.interpolate(min(s + 0.5, p.length))
        direction = np.array([b.x - a.x, b.y - a.y])
        if detmath.norm(direction) > 0 and detmath.dot(direction, heading) / detmath.norm(direction) > 0.5:
            return int(k), s
    return None


def _next_path(paths: RoutePaths, used: set[int], tail: np.ndarray) -> int | None:
    """The unused path starting within ROUTE_JOIN_TOL_M of the tail's end with the smallest turn (first on ties)."""
    if len(paths.lines) == 0:
        return None
    ok = detmath.hypot(*(paths.start - tail[-1]).T) <= ROUTE_JOIN_TOL_M
    ok[list(used)] = False
    if not ok.any():
        return None
    turn = np.zeros(len(ok))
    if len(tail) >= 2:
        prev, d = tail[-1] - tail[-2], paths.start_dir
        turn = np.abs(detmath.arctan2(prev[0] * d[:, 1] - prev[1] * d[:, 0], detmath.dot(d, prev)))
    candidates = np.flatnonzero(ok)
    return int(candidates[np.argmin(turn[candidates])])
