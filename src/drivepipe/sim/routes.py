"""Lane-level routes for closed-loop scenarios, built from the map's baseline paths (never the expert's trajectory).

- `lane_route`: the baseline paths (lanes and lane connectors) the expert drove, map-matched, then extended along
  the lane graph (smallest turn first) until the route has the requested length; the goal is its end.
- `lane_change_route`: the same up to a point where the expert drives on a lane that has a same-direction neighbour
  in its lane group; there the route moves over to the neighbour on a smoothstep over LANE_CHANGE_M and continues
  from the neighbour. It gives a lane-change mission on logs whose expert never changed lanes (nuPlan's
  `changing_lane` scenarios are ego-initiated too); `LaneChangeFinder` finds where one fits.
Both return the route's lane connectors with their entry points, for the traffic-light input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

ROUTE_JOIN_TOL_M = 1.5
MATCH_TOL_M = 2.5          # expert pose to baseline path for map matching
LANE_CHANGE_M = 20.0       # m of route over which a lane-change mission blends into the neighbour lane (as world/ego)
LANE_CHANGE_ROOM_M = LANE_CHANGE_M + 10.0  # m both lanes must still run ahead of where the manoeuvre starts


def _paths(vmap: Any) -> tuple[list[np.ndarray], list[int | None], Any, list[int | None]]:
    """Baseline path vertex arrays, their lane connector fid (None for lanes), an STRtree over them, and their
    lane fid (None for connectors)."""
    coords, conns, geoms, lanes = [], [], [], []
    for f in vmap.layer("baseline_paths"):
        g = f.geometry
        if g.geom_type != "LineString" or g.length <= 0:
            continue
        coords.append(np.asarray(g.coords)[:, :2])
        c, ln = f.props.get("lane_connector_fid"), f.props.get("lane_fid")
        conns.append(int(c) if c not in (None, "") else None)
        lanes.append(int(ln) if ln not in (None, "") and conns[-1] is None else None)
        geoms.append(g)
    return coords, conns, shapely.STRtree(geoms) if geoms else None, lanes


def _match(coords: list[np.ndarray], tree: Any, pts: np.ndarray, yaw: np.ndarray) -> list[int]:
    """The baseline paths the expert drove, in order (nearest path heading the expert's way per pose)."""
    order: list[int] = []
    for p, h in zip(pts, yaw):
        best, best_d = None, MATCH_TOL_M
        for k in tree.query(shapely.Point(*p).buffer(MATCH_TOL_M)):
            c = coords[int(k)]
            d = np.linalg.norm(c - p, axis=1)
            j = int(np.argmin(d))
            seg = c[min(j + 1, len(c) - 1)] - c[max(j - 1, 0)]
            if np.cos(np.arctan2(seg[1], seg[0]) - h) < 0.5:
                continue
            dist = float(shapely.distance(shapely.LineString(c), shapely.Point(*p)))
            if dist < best_d:
                best, best_d = int(k), dist
        if best is not None and (not order or order[-1] != best):
            order.append(best)
    return order


def _next(coords: list[np.ndarray], tail: np.ndarray, used: set[int]) -> int | None:
    """The path starting at the tail's end with the smallest turn."""
    starts = np.array([c[0] for c in coords])
    ok = np.flatnonzero(np.hypot(*(starts - tail[-1]).T) <= ROUTE_JOIN_TOL_M)
    ok = [k for k in ok if k not in used]
    if not ok:
        return None
    prev = tail[-1] - tail[-2]
    dirs = [coords[k][1] - coords[k][0] for k in ok]
    turn = [abs(np.arctan2(prev[0] * d[1] - prev[1] * d[0], prev @ d)) for d in dirs]
    return int(ok[int(np.argmin(turn))])


def _from_join(c: np.ndarray, tail_end: np.ndarray) -> np.ndarray:
    """Path `c` from where the route so far ends: a matched path may be joined mid-way (a lane entered from a
    connector that ends inside it), and its part before the join would send the route backwards."""
    j = int(np.argmin(np.linalg.norm(c - tail_end, axis=1)))
    if j + 1 < len(c) and np.dot(c[j + 1] - c[j], c[j] - tail_end) < 0.0:
        j += 1  # the nearest vertex lies behind the join: start at the next one
    return c[j:]


def _expert_parts(coords: list[np.ndarray], matched: list[int], start_xy: np.ndarray) -> list[np.ndarray]:
    """The matched paths from the expert's start, each from where the previous one ends."""
    first = coords[matched[0]]
    parts = [first[int(np.argmin(np.linalg.norm(first - start_xy, axis=1))):]]
    for k in matched[1:]:
        parts.append(_from_join(coords[k], parts[-1][-1]))
    return parts


def _extend(coords: list[np.ndarray], conns: list[int | None], parts: list[np.ndarray], route_paths: list[int],
            min_length_m: float) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Append paths along the lane graph (smallest turn first) until the route is min_length_m long -> (route cut
    at that length, [(lane connector fid, entry point)] of `route_paths` plus the appended paths)."""
    route_paths, used = list(route_paths), set(route_paths)
    length = float(sum(np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p in parts))
    while length < min_length_m:
        k = _next(coords, np.vstack(parts[-2:]) if len(parts[-1]) < 2 else parts[-1], used)
        if k is None:
            break
        used.add(k)
        parts.append(coords[k])
        route_paths.append(k)
        length += float(np.linalg.norm(np.diff(coords[k], axis=0), axis=1).sum())
    lights = [(conns[k], coords[k][0]) for k in route_paths if conns[k] is not None]
    xy = np.vstack(parts)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
    return truncate(xy[keep], min_length_m), lights


def lane_route(vmap: Any, expert_xy: np.ndarray, expert_yaw: np.ndarray, min_length_m: float
               ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], str]:
    """(route (R, 2) global, [(lane connector fid, its entry point)] along the route, source): see the module
    docstring. Falls back to the expert path extended straight ahead (source "expert_path") when no baseline
    path matches."""
    coords, conns, tree, _ = _paths(vmap)
    matched = _match(coords, tree, expert_xy, expert_yaw) if tree is not None else []
    if not matched:
        d = np.array([np.cos(expert_yaw[-1]), np.sin(expert_yaw[-1])])
        ext = expert_xy[-1] + np.arange(1, int(min_length_m) + 1)[:, None] * d
        return np.vstack([expert_xy, ext]), [], "expert_path"
    route, lights = _extend(coords, conns, _expert_parts(coords, matched, expert_xy[0]), matched, min_length_m)
    return route, lights, "lane_graph"


def _arc(line: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])


def _project_s(line: np.ndarray, p: np.ndarray) -> float:
    """Arc length of the point of `line` nearest to p."""
    s = _arc(line)
    a, d = line[:-1], np.diff(line, axis=0)
    f = np.clip(np.einsum("nd,nd->n", p - a, d) / np.maximum(np.einsum("nd,nd->n", d, d), 1e-12), 0.0, 1.0)
    k = int(np.argmin(np.linalg.norm(a + f[:, None] * d - p, axis=1)))
    return float(s[k] + f[k] * (s[k + 1] - s[k]))


def _at(line: np.ndarray, s_q: np.ndarray) -> np.ndarray:
    s = _arc(line)
    return np.stack([np.interp(s_q, s, line[:, 0]), np.interp(s_q, s, line[:, 1])], axis=1)


class LaneChangeFinder:
    """Where a lane-change mission fits: the lane under a point, and a same-direction neighbour of its lane group
    with at least LANE_CHANGE_ROOM_M of both lanes ahead."""

    def __init__(self, vmap: Any) -> None:
        self.coords, self.conns, self.tree, self.lane_of = _paths(vmap)
        self.path_of_lane = {ln: k for k, ln in enumerate(self.lane_of) if ln is not None}
        self.group_of: dict[int, int] = {}
        for f in vmap.layer("lanes_polygons"):
            group = f.props.get("lane_group_fid")
            if group is not None:
                self.group_of[int(f.props.get("lane_fid", f.fid) or f.fid)] = int(group)
        self.lanes_of_group: dict[int, list[int]] = {}
        for ln, group in sorted(self.group_of.items()):
            self.lanes_of_group.setdefault(group, []).append(ln)

    def pair(self, p: np.ndarray, yaw: float) -> tuple[int, int, float, float] | None:
        """(path of the lane at p, path of its nearest neighbour lane, arc of p on each) or None."""
        hit = _match(self.coords, self.tree, p[None], np.array([yaw])) if self.tree is not None else []
        own = hit[0] if hit else None
        lane = self.lane_of[own] if own is not None else None
        if lane is None or lane not in self.group_of:
            return None
        best = None
        for other in self.lanes_of_group[self.group_of[lane]]:
            k = self.path_of_lane.get(other)
            if other == lane or k is None:
                continue
            a, b = self.coords[own], self.coords[k]
            s_a, s_b = _project_s(a, p), _project_s(b, p)
            ahead = min(_arc(a)[-1] - s_a, _arc(b)[-1] - s_b)
            gap = float(np.linalg.norm(_at(b, np.array([s_b]))[0] - p))
            if ahead >= LANE_CHANGE_ROOM_M and (best is None or gap < best[0]):
                best = (gap, (own, k, s_a, s_b))
        return None if best is None else best[1]


def lane_change_route(vmap: Any, expert_xy: np.ndarray, expert_yaw: np.ndarray, k: int, min_length_m: float
                      ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], str] | None:
    """The route of a lane-change mission whose manoeuvre starts at the expert's pose k (see the module docstring),
    or None when no neighbour lane has room there."""
    finder = LaneChangeFinder(vmap)
    pair = finder.pair(expert_xy[k], float(expert_yaw[k]))
    matched = _match(finder.coords, finder.tree, expert_xy[:k + 1], expert_yaw[:k + 1])
    if pair is None or not matched or matched[-1] != pair[0]:
        return None
    own, other, s_a, s_b = pair
    coords = finder.coords
    parts = _expert_parts(coords, matched, expert_xy[0])
    on_own = parts[-1]
    parts[-1] = truncate(on_own, _project_s(on_own, expert_xy[k]))  # lane a up to where the manoeuvre starts
    grid = np.arange(0.0, LANE_CHANGE_M + 0.5, 1.0)
    w = np.clip(grid / LANE_CHANGE_M, 0.0, 1.0)
    w = (w * w * (3.0 - 2.0 * w))[:, None]
    parts.append((1.0 - w) * _at(coords[own], s_a + grid) + w * _at(coords[other], s_b + grid))
    b = coords[other]
    parts.append(b[_arc(b) > s_b + LANE_CHANGE_M + 1e-6])
    route, lights = _extend(coords, finder.conns, parts, matched + [other], min_length_m)
    return route, lights, "lane_graph_lane_change"


def truncate(xy: np.ndarray, length_m: float) -> np.ndarray:
    """The polyline cut at arc length `length_m` (interpolated end point)."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    if s[-1] <= length_m:
        return xy
    if length_m <= 0.0:
        return xy[:1]
    j = int(np.searchsorted(s, length_m))
    f = (length_m - s[j - 1]) / max(s[j] - s[j - 1], 1e-9)
    return np.vstack([xy[:j], xy[j - 1] + f * (xy[j] - xy[j - 1])])
