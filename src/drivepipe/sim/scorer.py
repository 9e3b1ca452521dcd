"""One scorer for every closed-loop backend, computed from per-step logs (the terms are defined below).

A step row (one dict per tick, also the columns of steps/<scenario>.csv; see STEP_COLUMNS):
    t_s, x_m, y_m, yaw_rad, speed_mps, accel_mps2, yaw_rate_rps, steer_rad  ego state after the tick (global frame)
    collisions        "kind:track_id;..." or a list of (kind, track_id); kind in vehicle | pedestrian | static
                      (bicycles count as pedestrian = vulnerable road user, like the CARLA leaderboard)
    off_road          bool, some ego corner is > 0.3 m outside the drivable area
    route_progress_m  arc length of the ego's projection on the route; route_length_m the length of the route to
                      the goal (a zero-length route is invalid and scores RC 0, never 100)
    route_deviation_m distance from the ego to the route centreline
    red_light         bool, the ego entered a red-light lane connector / crossed its stop line at this tick
    expert_progress_m optional, progress of the logged expert after the same elapsed time (nuPlan-CLS progress)
    done_reason       "" or why the backend ended the episode
    ttc_s             time-to-collision under constant velocity (inf = none within 0.95 s); speed_limit_mps of
                      the lane under the ego (nan = unknown); both optional (missing = no violation)

Definitions (CARLA leaderboard 2.x and nuPlan CLS, adapted):
- Route-terminating events (interventions, no coefficient): deviation > DEVIATION_LIMIT_M; blocked (speed below
  BLOCKED_SPEED_MPS for BLOCKED_FRACTION of the scenario length, at least BLOCKED_MIN_S; CARLA's 180 s are
  meant for routes of minutes, ours last seconds) while the logged expert moved >= BLOCKED_EXPERT_M (a stop
  the expert also made is not an intervention). Rows after the first terminating event are not scored; the
  backend, not the scorer, ends an episode when the route is completed or the time is up.
- Collisions count only while the ego moves (>= BLOCKED_SPEED_MPS, else not at fault); the same actor within
  COLLISION_DEDUP_S, or the same kind within COLLISION_DEDUP_M of a previous counted one, counts once.
- IS = 0.50^ped * 0.60^veh * 0.65^static * 0.70^red * (1 - off-road share) * min-speed, off-road share =
  distance driven while off-road / max(route length, distance driven); min-speed (CARLA 2.x) = 1 - 0.3 * (1 -
  ego mean speed / expert mean speed) when the expert averaged >= MIN_SPEED_EXPERT_MPS. RC = 100 * min(1,
  progress / route length) against the route to the goal. DS = RC * IS.
- Comfort: Savitzky-Golay derivatives (order 2; window 9 for acceleration, 15 for jerk, yaw rate and yaw
  acceleration: nuPlan's 8 and 15, rounded up to odd); nuPlan bounds in COMFORT_BOUNDS must all hold.
- nuPlan-CLS-like = NC * DAC * DDC * MP * (5 EP + 5 TTC + 4 SL + 2 C) / 16 with NC no-at-fault-collision (0
  vehicle/VRU, 0.5 static), DAC drivable-area compliance, DDC driving direction (backward motion along the
  heading in 1 s: < 2 m 1, < 6 m 0.5, else 0), MP making progress (EP >= 0.2), EP = min(1, progress / expert
  progress) (1 when the expert moved < 2 m), TTC (every ttc_s >= 0.95 s), SL = 1 - overspeed integral /
  (MAX_OVERSPEED_MPS x duration), C comfort. Without an expert (CARLA routes) EP is left out of the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STEP_COLUMNS = ("t_s", "x_m", "y_m", "yaw_rad", "speed_mps", "accel_mps2", "yaw_rate_rps", "steer_rad",
                "collisions", "off_road", "route_progress_m", "route_length_m", "route_deviation_m", "red_light",
                "expert_progress_m", "done_reason", "ttc_s", "speed_limit_mps")
PENALTY = {"pedestrian": 0.50, "vehicle": 0.60, "static": 0.65, "red_light": 0.70, "min_speed": 0.70}
MIN_SPEED_EXPERT_MPS = 1.0   # the min-speed infraction applies when the expert's mean speed is at least this
EXPERT_MIN_PROGRESS_M = 2.0  # nuPlan: below this expert progress, ego progress counts as complete
TTC_MIN_S = 0.95
MAX_OVERSPEED_MPS = 2.23     # speed-limit term: overspeed integral normalised by this x duration
DIRECTION_WINDOW_S = 1.0
CLS_WEIGHTS = {"progress": 5.0, "ttc": 5.0, "speed_limit": 4.0, "comfort": 2.0}
DEVIATION_LIMIT_M = 30.0
BLOCKED_SPEED_MPS = 0.1
BLOCKED_FRACTION = 0.5
BLOCKED_MIN_S = 3.0
BLOCKED_EXPERT_M = 2.0
COLLISION_DEDUP_S = 5.0
COLLISION_DEDUP_M = 5.0
SG_ORDER = 2
SG_WINDOW_ACCEL = 9
SG_WINDOW_JERK = 15
COMFORT_BOUNDS = {"min_lon_accel": -4.05, "max_lon_accel": 2.40, "max_abs_lat_accel": 4.89,
                  "max_abs_yaw_rate": 0.95, "max_abs_yaw_accel": 1.93, "max_abs_lon_jerk": 4.13,
                  "max_abs_jerk": 8.37}


def savgol_derivative(x_T: np.ndarray, dt_s: float, window: int, order: int = SG_ORDER,
                      deriv: int = 1) -> np.ndarray:
    """Savitzky-Golay smoothed derivative of a uniformly sampled series (numpy only).

    Fits a polynomial of `order` by least squares to each `window` of samples and evaluates its `deriv`-th
    derivative at the sample; the first/last half-windows use the fit of the first/last full window (like
    scipy's mode="interp"). The window shrinks to the largest odd length <= len(x) when the series is short.
    Returns (T,) float64; zeros when the series is too short to fit.
    """
    x = np.asarray(x_T, dtype=np.float64)
    n = len(x)
    window = min(window if window % 2 else window + 1, n if n % 2 else n - 1)
    if window <= order or deriv > order:
        return np.zeros(n)
    half = window // 2
    offsets = np.arange(-half, half + 1) * dt_s
    vander = np.vander(offsets, order + 1, increasing=True)  # (W, order+1)
    pinv = np.linalg.pinv(vander)  # coefficients = pinv @ window samples
    out = np.empty(n)
    for i in range(n):
        c = min(max(i, half), n - 1 - half)
        coef = pinv @ x[c - half: c + half + 1]
        tau = (i - c) * dt_s
        powers = np.array([0.0 if p < deriv else np.prod(np.arange(p - deriv + 1, p + 1)) * tau ** (p - deriv)
                           for p in range(order + 1)])
        out[i] = powers @ coef
    return out


def parse_collisions(value: Any) -> list[tuple[str, int]]:
    """A row's collisions as (kind, track_id) pairs, from a list or the CSV form "kind:id;kind:id"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        out = []
        for item in filter(None, value.split(";")):
            kind, _, tid = item.partition(":")
            out.append((kind, int(tid) if tid else -1))
        return out
    return [(str(k), int(t)) for k, t in value]


def format_collisions(pairs: list[tuple[str, int]]) -> str:
    return ";".join(f"{k}:{t}" for k, t in pairs)


def _flag(v: Any) -> bool:
    return str(v).lower() in ("true", "1", "1.0") if isinstance(v, str) else bool(v)


def _termination(rows: list[dict[str, Any]], step_s: float, duration_s: float) -> tuple[int, str]:
    """(number of rows scored, terminating event or "") from the deviation and blocked rules."""
    blocked_s = max(BLOCKED_MIN_S, BLOCKED_FRACTION * duration_s)
    still, still_from = 0.0, 0
    for i, r in enumerate(rows):
        if float(r["route_deviation_m"]) > DEVIATION_LIMIT_M:
            return i + 1, "route_deviation"
        if float(r["speed_mps"]) < BLOCKED_SPEED_MPS:
            still_from = i if still == 0.0 else still_from
            still += step_s
        else:
            still = 0.0
        if still >= blocked_s - 1e-9 and _expert_moved(rows, still_from, i):
            return i + 1, "blocked"
    return len(rows), ""


def _expert_progress(row: dict[str, Any]) -> float | None:
    v = row.get("expert_progress_m")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _expert_moved(rows: list[dict[str, Any]], i0: int, i1: int) -> bool:
    """Blocked counts only if the logged expert moved >= BLOCKED_EXPERT_M meanwhile (unknown expert: True)."""
    a, b = _expert_progress(rows[i0]), _expert_progress(rows[i1])
    return a is None or b is None or b - a >= BLOCKED_EXPERT_M


def count_collisions(events: list[tuple[float, str]]) -> dict[str, int]:
    """At-fault collisions by kind, from `counted_collisions` (see module docstring)."""
    counts = {"vehicle": 0, "pedestrian": 0, "static": 0}
    for _, kind in events:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def counted_collisions(rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(time s, kind) of each collision that counts after the dedup rules, in order. A contact that began while
    the ego stood stays the same (not at-fault) event while it lasts, also once the ego moves again."""
    out: list[tuple[float, str]] = []
    last_by_actor: dict[tuple[str, int], float] = {}
    counted: list[tuple[str, float, float]] = []  # kind, x, y of counted events
    for r in rows:
        t, x, y = float(r["t_s"]), float(r["x_m"]), float(r["y_m"])
        moving = float(r["speed_mps"]) >= BLOCKED_SPEED_MPS
        for kind, tid in parse_collisions(r.get("collisions")):
            kind = "pedestrian" if kind in ("bicycle", "vru") else kind
            prev = last_by_actor.get((kind, tid))
            last_by_actor[(kind, tid)] = t
            if not moving or (prev is not None and t - prev <= COLLISION_DEDUP_S):
                continue
            if any(k == kind and np.hypot(x - cx, y - cy) <= COLLISION_DEDUP_M for k, cx, cy in counted):
                continue
            counted.append((kind, x, y))
            out.append((t, kind))
    return out


def comfort(rows: list[dict[str, Any]], step_s: float) -> dict[str, Any]:
    """Smoothed kinematic extremes of the ego and whether all nuPlan comfort bounds hold."""
    speed = np.array([float(r["speed_mps"]) for r in rows])
    yaw = np.unwrap(np.array([float(r["yaw_rad"]) for r in rows]))
    lon_acc = savgol_derivative(speed, step_s, SG_WINDOW_ACCEL)
    lon_jerk = savgol_derivative(lon_acc, step_s, SG_WINDOW_JERK)
    yaw_rate = savgol_derivative(yaw, step_s, SG_WINDOW_JERK)
    yaw_acc = savgol_derivative(yaw, step_s, SG_WINDOW_JERK, deriv=2)
    lat_acc = speed * yaw_rate
    lat_jerk = savgol_derivative(lat_acc, step_s, SG_WINDOW_JERK)
    jerk = np.hypot(lon_jerk, lat_jerk)
    mx = (lambda a: float(np.max(np.abs(a))) if len(a) else 0.0)
    out = {"max_abs_lon_accel": mx(lon_acc), "min_lon_accel": float(lon_acc.min()) if len(rows) else 0.0,
           "max_lon_accel": float(lon_acc.max()) if len(rows) else 0.0, "max_abs_lat_accel": mx(lat_acc),
           "max_abs_lon_jerk": mx(lon_jerk), "max_abs_jerk": mx(jerk), "max_abs_yaw_rate": mx(yaw_rate),
           "max_abs_yaw_accel": mx(yaw_acc)}
    b = COMFORT_BOUNDS
    out["comfortable"] = bool(out["min_lon_accel"] >= b["min_lon_accel"] and out["max_lon_accel"] <= b["max_lon_accel"]
                              and all(out[k] <= b[k] for k in b if k.startswith("max_abs")))
    return out


def _off_road_share(rows: list[dict[str, Any]], route_length_m: float) -> float:
    xy = np.array([[float(r["x_m"]), float(r["y_m"])] for r in rows])
    if len(xy) < 2:
        return 0.0
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    off = np.array([_flag(r["off_road"]) for r in rows[1:]])
    denom = max(route_length_m, float(seg.sum()))
    return float(min(1.0, seg[off].sum() / denom)) if denom > 0 else 0.0


def _num(v: Any, default: float) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return default
    return v if not np.isnan(v) else default


def _direction(rows: list[dict[str, Any]], step_s: float) -> float:
    """nuPlan driving-direction compliance from the worst backward motion (along the earlier heading) in any
    DIRECTION_WINDOW_S: < 2 m -> 1, < 6 m -> 0.5, else 0."""
    n = max(1, int(round(DIRECTION_WINDOW_S / step_s)))
    xy = np.array([[float(r["x_m"]), float(r["y_m"])] for r in rows])
    yaw = np.array([float(r["yaw_rad"]) for r in rows])
    if len(xy) <= n:
        return 1.0
    d = xy[n:] - xy[:-n]
    back = float(np.max(np.maximum(0.0, -(d[:, 0] * np.cos(yaw[:-n]) + d[:, 1] * np.sin(yaw[:-n])))))
    return 1.0 if back < 2.0 else 0.5 if back < 6.0 else 0.0


def _cls(rows: list[dict[str, Any]], collisions: dict[str, int], progress_m: float, comfortable: bool,
         step_s: float) -> dict:
    """nuPlan-CLS-like score and every term (module docstring)."""
    nc = 0.0 if collisions["vehicle"] + collisions["pedestrian"] else (0.5 if collisions["static"] else 1.0)
    dac = 0.0 if any(_flag(r["off_road"]) for r in rows) else 1.0
    ddc = _direction(rows, step_s)
    expert = [e for e in (_expert_progress(r) for r in rows) if e is not None]
    ep = None
    if expert:
        ep = 1.0 if max(expert) < EXPERT_MIN_PROGRESS_M else float(min(1.0, max(0.0, progress_m) / max(expert)))
    mp = 1.0 if ep is None or ep >= 0.2 else 0.0
    ttc = 1.0 if all(_num(r.get("ttc_s"), np.inf) >= TTC_MIN_S for r in rows) else 0.0
    over = sum(max(0.0, float(r["speed_mps"]) - _num(r.get("speed_limit_mps"), np.inf)) for r in rows) * step_s
    sl = float(max(0.0, 1.0 - over / (MAX_OVERSPEED_MPS * max(step_s * len(rows), step_s))))
    w = CLS_WEIGHTS
    terms = {"progress": ep, "ttc": ttc, "speed_limit": sl, "comfort": float(comfortable)}
    used = {k: v for k, v in terms.items() if v is not None}
    weighted = sum(w[k] * v for k, v in used.items()) / sum(w[k] for k in used)
    return {"nuplan_cls": nc * dac * ddc * mp * weighted, "no_at_fault_collision": nc, "drivable_area_compliance": dac,
            "driving_direction_compliance": ddc, "making_progress": mp, "progress_ratio": ep, "ttc_within_bound": ttc,
            "speed_limit_compliance": sl}


def _min_speed_factor(rows: list[dict[str, Any]], step_s: float) -> tuple[float, float | None]:
    """(CARLA 2.x min-speed penalty 1 - 0.3 * (1 - ego/expert mean speed), the speed ratio) when the expert's
    mean speed is >= MIN_SPEED_EXPERT_MPS, else (1, None)."""
    expert = [_expert_progress(r) for r in rows]
    if any(e is None for e in expert) or len(rows) < 2:
        return 1.0, None
    duration = step_s * len(rows)
    expert_speed = (expert[-1] - 0.0) / duration
    if expert_speed < MIN_SPEED_EXPERT_MPS:
        return 1.0, None
    ratio = float(min(1.0, np.mean([float(r["speed_mps"]) for r in rows]) / expert_speed))
    return 1.0 - (1.0 - PENALTY["min_speed"]) * (1.0 - ratio), ratio


def first_infraction(rows: list[dict[str, Any]], event: str, collisions: list[tuple[float, str]]
                     ) -> tuple[float | None, str]:
    """(time s, type) of the first infraction or terminating event of an episode; (None, "") when clean.
    `collisions`: the episode's `counted_collisions`."""
    hits: dict[float, str] = {}
    for t, kind in collisions:
        hits.setdefault(t, kind)
    for r in rows:
        kind = hits.get(float(r["t_s"]), "")
        for name, hit in ((f"collision_{kind}", bool(kind)),
                          ("red_light", _flag(r.get("red_light", False))), ("off_road", _flag(r["off_road"])),
                          ("ttc", _num(r.get("ttc_s"), np.inf) < TTC_MIN_S)):
            if hit:
                return float(r["t_s"]), name
    return (float(rows[-1]["t_s"]), event) if event else (None, "")


def score_episode(rows: list[dict[str, Any]], step_s: float, duration_s: float) -> dict[str, Any]:
    """Scores of one episode from its step rows (see module docstring). Returns a flat-ish dict."""
    if not rows:
        raise ValueError("score_episode: no step rows")
    n, event = _termination(rows, step_s, duration_s)
    rows = rows[:n]
    route_len = float(rows[0]["route_length_m"])
    progress = max(float(r["route_progress_m"]) for r in rows)
    rc = 100.0 * float(np.clip(progress / route_len, 0.0, 1.0)) if route_len > 0 else 0.0
    collisions = counted_collisions(rows)
    coll = count_collisions(collisions)
    red = sum(_flag(r.get("red_light", False)) for r in rows)
    off_share = _off_road_share(rows, route_len)
    min_speed, speed_ratio = _min_speed_factor(rows, step_s)
    infraction = (PENALTY["pedestrian"] ** coll["pedestrian"] * PENALTY["vehicle"] ** coll["vehicle"]
                  * PENALTY["static"] ** coll["static"] * PENALTY["red_light"] ** red * (1.0 - off_share) * min_speed)
    xy = np.array([[float(r["x_m"]), float(r["y_m"])] for r in rows])
    km = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) / 1000.0 if len(xy) > 1 else 0.0
    comf = comfort(rows, step_s)
    t_first, first = first_infraction(rows, event, collisions)
    return {"route_completion": rc, "infraction_score": infraction, "driving_score": rc * infraction,
            "collisions": coll, "red_lights": red, "off_road_share": off_share, "terminated_by": event,
            "interventions": int(bool(event)), "km_driven": km, "comfort": comf, "route_length_m": route_len,
            "min_speed_factor": min_speed, "speed_ratio_to_expert": speed_ratio, "valid_route": route_len > 0,
            "first_infraction_t_s": t_first, "first_infraction": first,
            **_cls(rows, coll, progress, comf["comfortable"], step_s)}


def aggregate(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-level metrics over the scored (not failed) episodes: plain means of RC, IS, DS (so mean DS !=
    mean RC * mean IS), summed collisions and interventions, collisions per km, collision rate = share of
    episodes with an at-fault collision, worst comfort extremes and the share of comfortable episodes."""
    if not episodes:
        return {k: None for k in ("route_completion", "driving_score", "infraction_score", "collisions",
                                  "interventions", "comfort", "collision_rate", "collisions_per_km",
                                  "red_lights", "nuplan_cls", "km_driven")}
    mean = (lambda key: float(np.mean([e[key] for e in episodes])))
    coll = {k: int(sum(e["collisions"][k] for e in episodes)) for k in ("vehicle", "pedestrian", "static")}
    km = float(sum(e["km_driven"] for e in episodes))
    comfort_keys = [k for k in episodes[0]["comfort"] if k.startswith("max_abs")]
    comf: dict[str, Any] = {k: float(max(e["comfort"][k] for e in episodes)) for k in comfort_keys}
    comf["min_lon_accel"] = float(min(e["comfort"]["min_lon_accel"] for e in episodes))
    comf["comfortable_rate"] = float(np.mean([e["comfort"]["comfortable"] for e in episodes]))
    cls = [e["nuplan_cls"] for e in episodes if e.get("nuplan_cls") is not None]
    return {"route_completion": mean("route_completion"), "infraction_score": mean("infraction_score"),
            "driving_score": mean("driving_score"), "collisions": coll,
            "interventions": int(sum(e["interventions"] for e in episodes)),
            "interventions_by_type": {t: sum(e["terminated_by"] == t for e in episodes)
                                      for t in ("route_deviation", "blocked")},
            "red_lights": int(sum(e["red_lights"] for e in episodes)), "km_driven": km,
            "collisions_per_km": (sum(coll.values()) / km) if km > 0 else None,
            "collision_rate": float(np.mean([sum(e["collisions"].values()) > 0 for e in episodes])),
            "off_road_share": mean("off_road_share"), "comfort": comf,
            "nuplan_cls": float(np.mean(cls)) if cls else None}
