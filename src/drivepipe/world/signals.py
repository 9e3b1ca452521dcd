"""Traffic signals of the synthetic world: a two-phase plan per intersection (east-west arms, then north-south
arms), the geometric conflicts between lane connectors, and the stop rule every agent (movers and the ego) obeys.

Opposite arms are green together, so turning traffic must yield: an agent waits at its stop line while an agent is
on a connector that crosses (or merges into) the connector it is about to take.
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString

from drivepipe.world.roads import City, LaneGraph

GREEN_S, YELLOW_S, ALL_RED_S = 14.0, 2.0, 1.5   # s, per phase (two phases per cycle)
GREEN, YELLOW, RED, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = ("green", "yellow", "red", "unknown")
CONFLICT_CLEARANCE_M = 3.2   # connectors whose centrelines come closer than this conflict (bodies + corner swing)

_CONFLICT_CACHE: dict[int, tuple[LaneGraph, dict[int, frozenset[int]]]] = {}


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

    def codes(self, t_s: float) -> np.ndarray:
        """(I, 4) status codes (GREEN/YELLOW/RED/UNKNOWN) per intersection and arm id at time t_s (s)."""
        local = ((t_s + self.offset[self._row]) - _phase(self._arm) * self.slot) % self.cycle
        code = np.where(local < GREEN_S, GREEN, np.where(local < GREEN_S + YELLOW_S, YELLOW, RED))
        out = np.full((len(self.arms), 4), UNKNOWN, dtype=np.int64)
        out[self._row, self._arm] = code
        return out

    def time_to_green(self, t_s: float, inter: int, arm: int) -> float:
        """Seconds until arm `arm` of intersection `inter` next turns green (0 if green now)."""
        local = (t_s + self.offset[inter] - _phase(arm) * self.slot) % self.cycle
        return 0.0 if local < GREEN_S else self.cycle - local

    def green_at(self, inter: int, arm: int, t_s: float, into_green_s: float) -> None:
        """Shift intersection `inter`'s cycle so that `arm` has been green for `into_green_s` s at time t_s."""
        self.offset[inter] = (_phase(arm) * self.slot + into_green_s - t_s) % self.cycle


def connector_conflicts(graph: LaneGraph) -> dict[int, frozenset[int]]:
    """Connector edge -> connector edges of other approach arms of its intersection that cross or merge with it
    (centrelines closer than CONFLICT_CLEARANCE_M). Cached per graph object."""
    cached = _CONFLICT_CACHE.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    conns = np.flatnonzero(graph.is_connector)
    lines = {int(c): LineString(graph.polyline(int(c))) for c in conns}
    out: dict[int, set[int]] = {int(c): set() for c in conns}
    for a in conns.tolist():
        for b in conns.tolist():
            if b <= a or graph.intersection[a] != graph.intersection[b] or graph.arm[a] == graph.arm[b]:
                continue
            if lines[a].distance(lines[b]) < CONFLICT_CLEARANCE_M:
                out[a].add(b)
                out[b].add(a)
    result = {k: frozenset(v) for k, v in out.items()}
    if len(_CONFLICT_CACHE) > 16:
        _CONFLICT_CACHE.clear()
    _CONFLICT_CACHE[id(graph)] = (graph, result)
    return result


def must_stop(code: int, gap_m: float, v: float, conflict: bool) -> bool:
    """Whether an agent `gap_m` before its stop point at speed v (m/s) must stop there: red (unless already past),
    yellow, or a conflicting connector occupied (unless it can no longer stop comfortably / hard)."""
    if gap_m < -0.5:
        return False
    if code == RED:
        return True
    if code == YELLOW and gap_m > v * v / (2.0 * 3.0):
        return True
    return conflict and gap_m > v * v / (2.0 * 6.0)
