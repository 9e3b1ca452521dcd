"""Traffic signals of the synthetic world: a two-phase plan per intersection (east-west arms, then north-south
arms), the geometric conflicts between lane connectors, and the stop rule every agent (movers and the ego) obeys.

Opposite arms are green together, so turning traffic must yield: an agent waits at its stop line while an agent is
on a connector that crosses (or merges into) the connector it is about to take, or while an agent with the right of
way (a higher `movement_ranks` rank: straight before the kerb-side turn before the turn across oncoming traffic) is
about to enter such a connector on green.
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString

from drivepipe.utils import detmath
from drivepipe.world.roads import STOP_SETBACK_M, City, LaneGraph

GREEN_S, YELLOW_S, ALL_RED_S = 14.0, 2.0, 1.5   # s, per phase (two phases per cycle)
# s after the all-red began until which a permissive turn standing at its line may still start to clear (`must_stop`):
# past the 1.5 s all-red, as the last oncoming car that could not stop for the yellow needs ~4 s to leave the
# conflict zone; the cross street's first cars yield to a turner on its connector (`busy_connectors`)
CLEAR_START_S = 3.0
GREEN, YELLOW, RED, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = ("green", "yellow", "red", "unknown")
CONFLICT_CLEARANCE_M = 3.2   # connectors whose centrelines come closer than this conflict (bodies + corner swing)
CLAIM_MIN_M, CLAIM_HEADWAY_S = 6.0, 3.0  # first in line within 6 m + 3 s of its green stop line: claims its connector

SPLIT_CLEARANCE_M = 2.8      # connectors out of one lane are apart once their centrelines are this far apart
_CONFLICT_CACHE: dict[int, tuple[LaneGraph, tuple[dict[int, frozenset[int]], dict[tuple[int, int], float]]]] = {}
_SPLIT_CACHE: dict[int, tuple[LaneGraph, dict[int, tuple[tuple[int, float], ...]]]] = {}


def _phase(arm: int | np.ndarray) -> int | np.ndarray:
    """Phase index of an approach arm: 0 for east/west (arms 0, 2), 1 for north/south (1, 3)."""
    return arm % 2


class TrafficLights:
    """Per-intersection two-phase cycle: green, yellow, then all-red clearance for each phase in turn."""

    def __init__(self, city: City, rng: np.random.Generator) -> None:
        self.arms = [inter.arms for inter in city.intersections]
        self.slot = GREEN_S + YELLOW_S + ALL_RED_S
        self.cycle = 2 * self.slot
        self.offset = rng.uniform(0.0, self.cycle, len(self.arms))
        rows = [(i, arm) for i, arms in enumerate(self.arms) for arm in arms]
        self._row, self._arm = (np.array(c, dtype=np.int64) for c in zip(*rows))
        self._extended = np.zeros(len(self.arms))               # s of green extension granted in ...
        self._extended_cycle = np.full(len(self.arms), -np.inf)  # ... this cycle (count since t = -offset)

    def codes(self, t_s: float) -> np.ndarray:
        """(I, 4) status codes (GREEN/YELLOW/RED/UNKNOWN) per intersection and arm id at time t_s (s)."""
        local = ((t_s + self.offset[self._row]) - _phase(self._arm) * self.slot) % self.cycle
        code = np.where(local < GREEN_S, GREEN, np.where(local < GREEN_S + YELLOW_S, YELLOW, RED))
        out = np.full((len(self.arms), 4), UNKNOWN, dtype=np.int64)
        out[self._row, self._arm] = code
        return out

    def since_yellow(self, t_s: float) -> np.ndarray:
        """(I, 4) seconds since each arm's light turned yellow, during its yellow and all-red clearance; inf
        otherwise."""
        local = ((t_s + self.offset[self._row]) - _phase(self._arm) * self.slot) % self.cycle - GREEN_S
        out = np.full((len(self.arms), 4), np.inf)
        out[self._row, self._arm] = np.where((local >= 0.0) & (local < YELLOW_S + ALL_RED_S), local, np.inf)
        return out

    def time_to_green(self, t_s: float, inter: int, arm: int) -> float:
        """Seconds until arm `arm` of intersection `inter` next turns green (0 if green now)."""
        local = (t_s + self.offset[inter] - _phase(arm) * self.slot) % self.cycle
        return 0.0 if local < GREEN_S else self.cycle - local

    def extend_green(self, inter: int, arm: int, t_s: float, dt_s: float, max_s: float) -> bool:
        """Vehicle-actuated green extension: if `arm` of intersection `inter` is green and would turn yellow within
        dt_s, hold the cycle (all arms) for dt_s, at most max_s s per cycle. Returns whether it held."""
        shifted = t_s + self.offset[inter] - _phase(arm) * self.slot
        local, cycle_no = shifted % self.cycle, np.floor(shifted / self.cycle)
        if cycle_no != self._extended_cycle[inter]:
            self._extended_cycle[inter], self._extended[inter] = cycle_no, 0.0
        if not GREEN_S - dt_s <= local < GREEN_S or self._extended[inter] + dt_s > max_s + 1e-9:
            return False
        self.offset[inter] -= dt_s
        self._extended[inter] += dt_s
        return True

    def green_at(self, inter: int, arm: int, t_s: float, into_green_s: float) -> None:
        """Shift intersection `inter`'s cycle so that `arm` has been green for `into_green_s` s at time t_s."""
        self.offset[inter] = (_phase(arm) * self.slot + into_green_s - t_s) % self.cycle


def connector_conflicts(graph: LaneGraph) -> dict[int, frozenset[int]]:
    """Connector edge -> connector edges of other approach arms of its intersection that cross or merge with it
    (centrelines closer than CONFLICT_CLEARANCE_M). Cached per graph object."""
    return _conflict_tables(graph)[0]


def conflict_ends(graph: LaneGraph) -> dict[tuple[int, int], float]:
    """(a, b) of conflicting connectors -> the last arc length on b within CONFLICT_CLEARANCE_M of a's centreline: an
    agent on b whose rear has passed it is out of a's way (a merge stays in the way to b's end). Cached per graph."""
    return _conflict_tables(graph)[1]


def _conflict_tables(graph: LaneGraph) -> tuple[dict[int, frozenset[int]], dict[tuple[int, int], float]]:
    """`connector_conflicts` and `conflict_ends` of a graph, computed once per graph object."""
    cached = _CONFLICT_CACHE.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    conns = np.flatnonzero(graph.is_connector)
    lines = {int(c): LineString(graph.polyline(int(c))) for c in conns}
    out: dict[int, set[int]] = {int(c): set() for c in conns}
    ends: dict[tuple[int, int], float] = {}
    for a in conns.tolist():
        for b in conns.tolist():
            if b == a or graph.intersection[a] != graph.intersection[b] or graph.arm[a] == graph.arm[b]:
                continue
            if lines[a].distance(lines[b]) < CONFLICT_CLEARANCE_M:
                out[a].add(b)
                s = np.append(np.arange(0.0, graph.length[b], 0.5), graph.length[b])
                near = [float(si) for si in s
                        if lines[a].distance(lines[b].interpolate(float(si))) < CONFLICT_CLEARANCE_M]
                ends[(a, b)] = max(near) if near else float(graph.length[b])
    result = ({k: frozenset(v) for k, v in out.items()}, ends)
    if len(_CONFLICT_CACHE) > 16:
        _CONFLICT_CACHE.clear()
    _CONFLICT_CACHE[id(graph)] = (graph, result)
    return result


def connector_splits(graph: LaneGraph) -> dict[int, tuple[tuple[int, float], ...]]:
    """Connector -> ((sibling, s m), ...): the other connectors out of the same lane and the arc length from which
    their centrelines are SPLIT_CLEARANCE_M apart (before that, bodies on the two overlap). Cached per graph."""
    cached = _SPLIT_CACHE.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    out: dict[int, list[tuple[int, float]]] = {}
    for lane in np.flatnonzero(~graph.is_connector).tolist():
        conns = [int(c) for c in graph.successors[lane]]
        for a in conns:
            for b in conns:
                if a == b:
                    continue
                s = np.arange(0.0, min(graph.length[a], graph.length[b]), 0.5)
                xa, ya, _ = graph.pose_at(np.full(len(s), a), s)
                xb, yb, _ = graph.pose_at(np.full(len(s), b), s)
                apart = np.flatnonzero(detmath.hypot(xa - xb, ya - yb) >= SPLIT_CLEARANCE_M)
                out.setdefault(a, []).append((b, float(s[apart[0]]) if len(apart) else float(graph.length[a])))
    result = {k: tuple(v) for k, v in out.items()}
    if len(_SPLIT_CACHE) > 16:
        _SPLIT_CACHE.clear()
    _SPLIT_CACHE[id(graph)] = (graph, result)
    return result


def connector_shadows(graph: LaneGraph, splits: dict[int, tuple[tuple[int, float], ...]], pred: dict[int, int],
                      edge: int, s: float, length: float) -> list[tuple[int, float]]:
    """(edge, s m) where a body of `length` m centred at s on connector `edge` also stands: the lane it came from
    (`pred`: connector -> lane) while its rear hangs over it, and the other connectors out of that lane until they
    split from its own (`connector_splits`)."""
    if not graph.is_connector[edge]:
        return []
    out = [(e2, s) for e2, split in splits.get(int(edge), ()) if s - length / 2 < split]
    if s < length / 2 + 1.0:
        lane = pred[int(edge)]
        out.append((lane, s + float(graph.length[lane])))
    return out


def movement_ranks(graph: LaneGraph, left_hand: bool) -> np.ndarray:
    """(E,) right-of-way rank per edge: 2 straight, 1 the kerb-side turn (right in right-hand traffic), 0 the turn
    across oncoming traffic; lanes get 2 (unused)."""
    near_side = "left" if left_hand else "right"
    return np.array([2 if not c or t == "straight" else 1 if t == near_side else 0
                     for c, t in zip(graph.is_connector.tolist(), graph.turn)], dtype=np.int64)


def busy_connectors(graph: LaneGraph, edge: np.ndarray, s: np.ndarray, v: np.ndarray, length: np.ndarray,
                    nxt: np.ndarray) -> dict[int, float]:
    """{connector: arc length (m) of the rearmost rear bumper on it} for the connectors with an agent on them, plus
    (at -inf) the next connector of every agent past its stop line or too close to it to stop comfortably (it is
    committed to enter). Agents: edge, s (m, box centre), speed (m/s), length (m), next edge (-1 none) arrays."""
    busy: dict[int, float] = {}
    for e, rear in zip(edge.tolist(), (s - length / 2).tolist()):
        if graph.is_connector[e]:
            busy[e] = min(busy.get(e, np.inf), rear)
    gap = graph.length[edge] - STOP_SETBACK_M - s - length / 2
    committed = ~graph.is_connector[edge] & (nxt >= 0) & ((gap < -0.5) | ((gap <= v ** 2 / 12.0) & (v > 0.5)))
    busy.update({int(e): -np.inf for e in nxt[committed]})
    return busy


def claimed_connectors(graph: LaneGraph, ranks: np.ndarray, codes: np.ndarray, edge: np.ndarray, s: np.ndarray,
                       v: np.ndarray, length: np.ndarray, nxt: np.ndarray) -> dict[int, int]:
    """Connector -> highest movement rank (`movement_ranks`) of the agents about to enter it: first on their lane,
    light green (`codes`: `TrafficLights.codes` now), front within CLAIM_MIN_M + CLAIM_HEADWAY_S v of the stop
    point. Agents as in `busy_connectors`."""
    order = np.lexsort((s, edge))
    first = np.zeros(len(edge), dtype=bool)
    first[order] = np.append(edge[order][1:] != edge[order][:-1], True)  # largest s on its edge
    gap = graph.length[edge] - STOP_SETBACK_M - s - length / 2
    near = (first & (nxt >= 0) & ~graph.is_connector[edge] & (codes[graph.intersection[edge], graph.arm[edge]] == GREEN)
            & (gap > -0.5) & (gap < CLAIM_MIN_M + CLAIM_HEADWAY_S * v))
    out: dict[int, int] = {}
    for c in nxt[near].tolist():
        out[c] = max(out.get(c, -1), int(ranks[c]))
    return out


def outranked(connector: int, claims: dict[int, int], conflicts: dict[int, frozenset[int]], ranks: np.ndarray) -> bool:
    """Whether an agent with the right of way over `connector` claims a connector that conflicts with it (`claims`:
    connector -> highest rank of the agents about to enter it)."""
    rank = int(ranks[connector])
    return any(claims.get(c, -1) > rank for c in conflicts.get(int(connector), ()))


def must_stop(code: int, gap_m: float, v: float, conflict: bool, clear_s: float = np.inf) -> bool:
    """Whether an agent `gap_m` before its stop point at speed v (m/s) must stop there: red (unless already past),
    yellow (unless it can no longer stop comfortably), or a conflicting connector occupied (unless it can no longer
    stop comfortably / hard).

    `clear_s`: for a permissive turn, seconds since its light turned yellow (`TrafficLights.since_yellow`). Standing
    at its stop line (it yielded through the green) it may still start until CLEAR_START_S into the all-red, and once
    rolling it goes on through the all-red: only a conflict stops it (turns clear the intersection at the end of the
    phase instead of waiting through the cycle)."""
    if gap_m < -0.5:
        return False
    if gap_m < 1.0 and clear_s < (YELLOW_S + CLEAR_START_S if v < 0.5 else YELLOW_S + ALL_RED_S):
        return conflict and gap_m > v * v / (2.0 * 6.0)
    if code == RED:
        return True
    if code == YELLOW and gap_m > v * v / (2.0 * 3.0):
        return True
    return conflict and gap_m > v * v / (2.0 * 6.0)


def ray_box(px: np.ndarray, py: np.ndarray, dx: float | np.ndarray, dy: float | np.ndarray, hx: np.ndarray,
            hy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances (m, along the unit direction (dx, dy)) of rays from (px, py) through the centred
    boxes |x| <= hx, |y| <= hy (slab method); t_in > t_out when a ray misses its box. Pedestrians check their path
    against vehicle bodies with it."""
    lo, hi = np.full(np.shape(px), -np.inf), np.full(np.shape(px), np.inf)
    for p, d, h in ((px, dx, hx), (py, dy, hy)):
        d = np.broadcast_to(d, np.shape(p))
        par = np.abs(d) < 1e-9
        safe = np.where(par, 1.0, d)
        a, b = (-h - p) / safe, (h - p) / safe
        lo = np.where(par, np.where(np.abs(p) <= h, lo, np.inf), np.maximum(lo, np.minimum(a, b)))
        hi = np.where(par, np.where(np.abs(p) <= h, hi, -np.inf), np.minimum(hi, np.maximum(a, b)))
    return lo, hi
