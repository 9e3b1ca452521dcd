"""World state exchanged between the synthetic world's dynamics, its sensor renderer, the nuPlan-format writer and
the embedded closed-loop backend. Pure data; no behaviour.

All positions are in the location's global (UTM) frame, metres; ground is the plane z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Conditions:
    """Per-log recording conditions of a synthetic log (drawn and stored by `drivepipe.world.conditions`). Angles
    in degrees; sun azimuth counter-clockwise from east (+x of the UTM frame), elevation above the horizon
    (negative at night)."""

    time_of_day: str = "day"
    weather: str = "clear"
    sun_elevation_deg: float = 55.0
    sun_azimuth_deg: float = 52.0
    exposure: float = 1.0            # scene brightness factor of the cameras (1 = bright day)
    exposure_jitter: float = 0.0     # std of the per-frame exposure factor (relative)
    visibility_m: float = 110.0      # e-folding distance of contrast (haze / fog / rain), m
    camera_noise: float = 0.0        # std of the camera's additive noise, 8-bit units
    camera_blur_px: float = 0.0      # Gaussian blur sigma, px at the written resolution (0 = sharp)
    lidar_range_noise_m: float = 0.02  # std of the range noise, m
    lidar_dropout: float = 0.0       # fraction of returns lost
    lidar_spurious: int = 0          # spurious near-range returns per sweep (fog droplets, rain)

    @property
    def headlights(self) -> bool:
        """Vehicles drive with their lights on (dusk and night)."""
        return self.time_of_day != "day"


CLEAR_DAY = Conditions()


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
    conditions: Conditions = CLEAR_DAY  # the log's recording conditions (light, weather, sensor noise)
