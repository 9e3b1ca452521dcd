"""The Intelligent Driver Model (Treiber et al. 2000), one definition for the synthetic world's traffic and ego
expert (`world/`) and the closed-loop planner and reactive agents (`sim/`).

    s* = s0 + max(0, v T + v (v - v_lead) / (2 sqrt(a b)))
    acc = a (max(1 - (v / v0)^4, free_floor) - (s* / max(gap, 0.1))^2),   clipped to >= -max_brake_mps2

with v0 floored at 0.1 m/s. An infinite gap is a free road (the interaction term is 0). The result never exceeds a.
The two clips are explicit parameters: the world's traffic bounds both (`world/traffic.py`), the planner and the
reactive agents use the plain model (no clip: their controllers and the vehicle limits bound the command).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IdmParams:
    """IDM constants: a = max acceleration and b = comfortable braking (m/s^2), s0 = minimum gap (m), T = time
    headway (s); free_floor bounds the free-road term from below, max_brake_mps2 the result (inf = unclipped)."""

    accel_mps2: float
    decel_mps2: float
    min_gap_m: float
    headway_s: float
    free_floor: float = -np.inf
    max_brake_mps2: float = np.inf


def idm_accel(v: np.ndarray | float, v0: np.ndarray | float, gap: np.ndarray | float, v_lead: np.ndarray | float,
              p: IdmParams) -> np.ndarray:
    """IDM acceleration (m/s^2), vectorised over broadcastable speeds v, desired speeds v0, bumper-to-bumper gaps
    (m, inf = free road) and leader speeds (m/s); float64 array (0-d for scalar inputs)."""
    v, v0 = np.asarray(v, float), np.maximum(np.asarray(v0, float), 0.1)
    s_star = p.min_gap_m + np.maximum(0.0, v * p.headway_s + v * (v - v_lead) / (2.0 * np.sqrt(p.accel_mps2 *
                                                                                                p.decel_mps2)))
    free = np.maximum(1.0 - np.square(np.square(v / v0)), p.free_floor)
    interact = (s_star / np.maximum(gap, 0.1)) ** 2
    return np.clip(p.accel_mps2 * (free - interact), -p.max_brake_mps2, p.accel_mps2)
