"""Kinematic prediction baselines with as many modes as the model, so that top-K is compared with top-K.

Constant velocity (CV) and constant acceleration (CA) extrapolate an agent's history; K hypotheses perturb that
extrapolation with a speed scale and a constant yaw rate, in a fixed order (`HYPOTHESES`), with fixed decreasing
probabilities. Mode 0 is the plain extrapolation and has the highest probability, so the baselines' top-1 is plain
CV / CA (top-1 vs the model's most probable mode).
"""

from __future__ import annotations

import numpy as np

YAW_RATE_RAD_S = 0.25  # rad/s, the turn-rate step of the hypotheses
# (speed scale, yaw rate in units of YAW_RATE_RAD_S); the first K are used
HYPOTHESES = ((1.0, 0.0), (1.0, 1.0), (1.0, -1.0), (0.5, 0.0), (1.5, 0.0), (1.0, 2.0), (1.0, -2.0), (0.0, 0.0),
              (0.5, 1.0), (0.5, -1.0), (1.5, 1.0), (1.5, -1.0))


def extrapolate(hist_AH3: np.ndarray, hist_valid_AH: np.ndarray, steps: int, dt_s: float,
                accel: bool = False) -> np.ndarray:
    """Constant-velocity (or constant-acceleration) extrapolation of agent histories -> (A, steps, 2).

    The velocity is the last history step's finite difference (0 when the previous step is invalid); the
    acceleration the difference of the last two velocities (0 when either is missing). Exact on a track of constant
    velocity (CV) or constant acceleration (CA) sampled at dt_s.
    """
    p0, p1 = hist_AH3[:, -1, :2], hist_AH3[:, -2, :2]
    v1 = np.where(hist_valid_AH[:, -2:-1], (p0 - p1) / dt_s, 0.0)
    t = (np.arange(1, steps + 1) * dt_s)[None, :, None]
    if not (accel and hist_AH3.shape[1] > 2):
        return p0[:, None] + v1[:, None] * t
    p2 = hist_AH3[:, -3, :2]
    v0 = np.where(hist_valid_AH[:, -3:-2] & hist_valid_AH[:, -2:-1], (p1 - p2) / dt_s, v1)
    a = (v1 - v0) / dt_s
    # a finite difference is the velocity half a step ago: bring it to now (exact on a constant acceleration)
    return p0[:, None] + (v1 + 0.5 * a * dt_s)[:, None] * t + 0.5 * a[:, None] * t**2


def hypotheses(base_AT2: np.ndarray, start_A2: np.ndarray, num_modes: int, dt_s: float) -> np.ndarray:
    """K modes (A, K, T, 2) from one extrapolation: mode k scales every step's displacement by s_k and turns
    it by the heading change w_k * t accumulated at the middle of the step (a constant-yaw-rate arc)."""
    if not 1 <= num_modes <= len(HYPOTHESES):
        raise ValueError(f"model.num_modes: baselines support 1..{len(HYPOTHESES)} modes, got {num_modes}")
    steps = base_AT2.shape[1]
    inc = np.diff(base_AT2, axis=1, prepend=start_A2[:, None])  # (A, T, 2) per-step displacement
    mid_t = (np.arange(steps) + 0.5) * dt_s
    modes = []
    for scale, rate in HYPOTHESES[:num_modes]:
        ang = rate * YAW_RATE_RAD_S * mid_t  # (T,)
        c, s = np.cos(ang)[None, :], np.sin(ang)[None, :]
        turned = np.stack([c * inc[..., 0] - s * inc[..., 1], s * inc[..., 0] + c * inc[..., 1]], axis=-1)
        modes.append(start_A2[:, None] + np.cumsum(scale * turned, axis=1))
    return np.stack(modes, axis=1)


def mode_probabilities(num_agents: int, num_modes: int) -> np.ndarray:
    """(A, K) fixed probabilities proportional to 2^-k: mode 0 (the plain extrapolation) is the most probable."""
    p = 0.5 ** np.arange(num_modes)
    return np.broadcast_to(p / p.sum(), (num_agents, num_modes)).copy()


def kinematic_baseline(hist_AH3: np.ndarray, hist_valid_AH: np.ndarray, steps: int, dt_s: float, num_modes: int,
                       accel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CV (accel=False) or CA baseline -> (trajectories (A, K, T, 2), probabilities (A, K))."""
    base = extrapolate(hist_AH3, hist_valid_AH, steps, dt_s, accel)
    return (hypotheses(base, hist_AH3[:, -1, :2], num_modes, dt_s),
            mode_probabilities(len(hist_AH3), num_modes))
