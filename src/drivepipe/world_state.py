"""World state exchanged between the synthetic world's dynamics, its sensor renderer, the nuPlan-format writer and
the embedded closed-loop backend. Pure data; no behaviour.

All positions are in the location's global (UTM) frame, metres; ground is the plane z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ActorState:
    """One tracked object. (x, y, z) is the box centre (z = height / 2 on flat ground); yaw about +z (rad);
    (vx, vy) global-frame velocity (m/s); length along heading, width lateral, height (m)."""

    track_id: int          # stable int within a log; the writer derives the 8-byte track token from it
    category: str          # one of schema.CATEGORIES
    x: float
    y: float
    z: float
    yaw: float
    length: float
    width: float
    height: float
    vx: float = 0.0
    vy: float = 0.0


@dataclass(frozen=True)
class EgoKinematics:
    """Ego rear-axle pose and motion. (vx, vy), (ax, ay) in the ego frame (m/s, m/s^2); yaw_rate rad/s."""

    x: float
    y: float
    yaw: float
    vx: float = 0.0
    vy: float = 0.0
    ax: float = 0.0
    ay: float = 0.0
    yaw_rate: float = 0.0
    z: float = 0.0


@dataclass(frozen=True)
class WorldSnapshot:
    """Everything observable at one instant. traffic_lights maps a lane_connectors fid to
    'green' | 'red' | 'yellow' | 'unknown'. scenario_tags: nuPlan scenario types active now, each with the
    track_id of the interacting agent or None."""

    timestamp_us: int
    ego: EgoKinematics
    actors: tuple[ActorState, ...]
    traffic_lights: dict[int, str] = field(default_factory=dict)
    scenario_tags: tuple[tuple[str, int | None], ...] = ()
