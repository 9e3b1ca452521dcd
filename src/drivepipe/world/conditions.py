"""Recording conditions of a synthetic log: time of day (sun position, exposure), weather (fog, rain) and sensor
quality (camera noise/blur/exposure jitter, lidar range noise, dropout and spurious returns).

Drawn once per log from the log's seed (`draw_conditions`), carried on every `WorldSnapshot` so the renderers see
them, and written into the log's database as the extra table `synthetic_conditions` (one row per log, keyed by the
log token; nuPlan readers ignore tables they do not know). `drivepipe.nuplan` reads it back into the bundle meta
(`NuplanLog.conditions`, `BundleMeta.conditions`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from drivepipe.utils import detmath
from drivepipe.world_state import CLEAR_DAY, Conditions

__all__ = ["CLEAR_DAY", "Conditions", "TIMES_OF_DAY", "WEATHERS", "conditions_from_row", "draw_conditions",
           "sun_direction", "write_conditions"]

TIMES_OF_DAY = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
_TIME_P = (0.6, 0.2, 0.2)
_WEATHER_P = (0.6, 0.2, 0.2)
TABLE = "synthetic_conditions"  # the reader's `drivepipe.nuplan.db.CONDITIONS_TABLE`




def sun_direction(cond: Conditions) -> np.ndarray:
    """(3,) unit vector towards the sun in the global frame."""
    el, az = detmath.radians(cond.sun_elevation_deg), detmath.radians(cond.sun_azimuth_deg)
    return np.array([detmath.cos(el) * detmath.cos(az), detmath.cos(el) * detmath.sin(az), detmath.sin(el)])


def conditions_from_row(row: dict | None) -> Conditions:
    """Conditions from a `synthetic_conditions` row as read back (`NuplanLog.conditions`); None -> CLEAR_DAY."""
    if row is None:
        return CLEAR_DAY
    names = {f.name for f in fields(Conditions)}
    return Conditions(**{k: v for k, v in row.items() if k in names})


def draw_conditions(seed: int) -> Conditions:
    """Conditions of one log, a pure function of the log seed (independent of the traffic's random stream)."""
    rng = np.random.default_rng([int(seed), 0xC0D])
    time_of_day = str(rng.choice(TIMES_OF_DAY, p=_TIME_P))
    weather = str(rng.choice(WEATHERS, p=_WEATHER_P))
    elevation = {"day": rng.uniform(20.0, 70.0), "dusk": rng.uniform(1.0, 12.0),
                 "night": rng.uniform(-30.0, -8.0)}[time_of_day]
    exposure = {"day": rng.uniform(0.85, 1.1), "dusk": rng.uniform(0.5, 0.7), "night": rng.uniform(0.22, 0.35)}
    exposure_value = exposure[time_of_day] * (0.85 if weather != "clear" else 1.0)
    visibility = {"clear": rng.uniform(90.0, 160.0), "rain": rng.uniform(45.0, 80.0),
                  "fog": rng.uniform(18.0, 40.0)}[weather]
    noise = rng.uniform(1.0, 3.0) * (2.5 if time_of_day == "night" else 1.0)
    blur = rng.uniform(0.6, 1.2) if weather == "rain" else rng.uniform(0.0, 0.5)
    dropout = {"clear": rng.uniform(0.0, 0.02), "rain": rng.uniform(0.05, 0.15), "fog": rng.uniform(0.1, 0.25)}
    spurious = {"clear": 0, "rain": int(rng.integers(100, 300)), "fog": int(rng.integers(300, 700))}
    return Conditions(time_of_day=time_of_day, weather=weather, sun_elevation_deg=round(float(elevation), 3),
                      sun_azimuth_deg=round(float(rng.uniform(0.0, 360.0)), 3), exposure=round(exposure_value, 4),
                      exposure_jitter=round(float(rng.uniform(0.01, 0.05)), 4), visibility_m=round(visibility, 2),
                      camera_noise=round(noise, 3), camera_blur_px=round(float(blur), 3),
                      lidar_range_noise_m=round(float(rng.uniform(0.01, 0.04)), 4),
                      lidar_dropout=round(dropout[weather], 4), lidar_spurious=spurious[weather])


def write_conditions(db_path: Path, cond: Conditions) -> None:
    """Add the `synthetic_conditions` table (one row keyed by the log's token) to a closed log database."""
    cols = [f.name for f in fields(Conditions)]
    types = {str: "TEXT", float: "REAL", int: "INTEGER"}
    decl = ", ".join(f"{f.name} {types[type(getattr(cond, f.name))]}" for f in fields(Conditions))
    con = sqlite3.connect(str(db_path))
    try:
        (log_token,) = con.execute("SELECT token FROM log").fetchone()
        con.execute(f"DROP TABLE IF EXISTS {TABLE}")
        con.execute(f"CREATE TABLE {TABLE} (log_token BLOB PRIMARY KEY, {decl})")
        con.execute(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * (len(cols) + 1))})",
                    [log_token, *asdict(cond).values()])
        con.commit()
    finally:
        con.close()

