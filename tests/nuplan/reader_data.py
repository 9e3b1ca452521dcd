"""A small hand-made nuPlan-format dataset for the reader tests, written with the synthetic `LogWriter`.

One log of 7 scenes x 4 sweeps (20 Hz) in Las Vegas UTM coordinates: the ego drives straight at 5 m/s with
heading EGO_YAW; a vehicle (track 7), a pedestrian (track 2**40 + 5) and a traffic cone (track 3) are at known
global poses; cameras CAM_F0 and CAM_L0 write a 32x24 image every second sweep; the lidar extrinsic is rotated 90
degrees about z so a reader that forgets it is caught. The map has a route of two lane groups joined by a
lane-group connector, plus a branch lane that is not on the route.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import shapely

from drivepipe.mapdata import MapFeature, VectorMap
from drivepipe.utils.geometry import pose_to_transform
from drivepipe.world.rig import Rig, default_rig
from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot
from drivepipe.world.writer import LogWriter, write_maps

LOG_NAME = "2021.05.12.22.00.38_veh-35_01008_01518"
LOCATION = "us-nv-las-vegas-strip"
T0_US = 1_620_858_000_000_000
DT_US = 50_000
NUM_SCENES = 7
SWEEPS_PER_SCENE = 4
EGO_X0, EGO_Y0, EGO_YAW, EGO_SPEED = 664_430.0, 3_997_700.0, 0.3, 5.0
CHANNELS = ("CAM_F0", "CAM_L0")
IMG_W, IMG_H = 32, 24
VEHICLE_ID, PED_ID, CONE_ID = 7, 2**40 + 5, 3
T_EGO_FROM_LIDAR = pose_to_transform(1.3, 0.0, 1.9, np.pi / 2)
ROUTE_IDS = (100, 200, 300)


@dataclass(frozen=True)
class Dataset:
    root: Path
    db: Path
    blobs: Path
    maps: Path


def ego_at(i: int) -> EgoKinematics:
    d = EGO_SPEED * i * DT_US / 1e6
    return EgoKinematics(x=EGO_X0 + d * np.cos(EGO_YAW), y=EGO_Y0 + d * np.sin(EGO_YAW), yaw=EGO_YAW,
                         vx=EGO_SPEED, ax=0.5, yaw_rate=0.01)


def vehicle_at(i: int) -> ActorState:
    """A vehicle 20 m ahead-left moving along global +y at 3 m/s (heading pi/2)."""
    t = i * DT_US / 1e6
    return ActorState(track_id=VEHICLE_ID, category="vehicle", x=EGO_X0 + 20.0, y=EGO_Y0 + 5.0 + 3.0 * t, z=0.8,
                      yaw=np.pi / 2, length=4.5, width=2.0, height=1.6, vx=0.0, vy=3.0)


def actors_at(i: int) -> tuple[ActorState, ...]:
    ped = ActorState(track_id=PED_ID, category="pedestrian", x=EGO_X0 - 4.0, y=EGO_Y0 + 3.0, z=0.9, yaw=0.0,
                     length=0.5, width=0.5, height=1.8)
    cone = ActorState(track_id=CONE_ID, category="traffic_cone", x=EGO_X0 + 6.0, y=EGO_Y0 - 2.0, z=0.3, yaw=0.0,
                      length=0.3, width=0.3, height=0.6)
    return (vehicle_at(i), ped) + ((cone,) if i < 10 else ())


def lidar_points(i: int) -> np.ndarray:
    """(N, 6) in the LIDAR frame; row 0 is (1, 0, 0) with intensity 100, ring 5, lidar_info 2."""
    rng = np.random.default_rng(i)
    pts = rng.uniform(-20, 20, size=(50, 6)).astype(np.float32)
    pts[:, 3:] = np.abs(np.round(pts[:, 3:]))
    pts[0] = (1.0, 0.0, 0.0, 100.0, 5.0, 2.0)
    return pts


def _image(i: int, channel: str) -> np.ndarray:
    img = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    img[..., 0] = 200 if channel == "CAM_F0" else 20  # red-dominant front camera: catches a BGR/RGB mix-up
    img[..., 2] = 40
    img[: i % IMG_H, :, 1] = 255
    return img


def _line(x0: float, y0: float, yaw: float, length: float) -> shapely.LineString:
    return shapely.LineString([(x0 + s * np.cos(yaw), y0 + s * np.sin(yaw)) for s in np.linspace(0, length, 11)])


def make_map() -> VectorMap:
    """Route: lane 1 (group 100) 60 m along EGO_YAW from 5 m behind the ego start, connector 5 (group 200) 10 m
    turning by 0.5 rad, lane 2 (group 300) 30 m; lane 3 (group 400, off route) branches at the end of lane 1."""
    sx, sy = EGO_X0 - 5 * np.cos(EGO_YAW), EGO_Y0 - 5 * np.sin(EGO_YAW)
    lane1 = _line(sx, sy, EGO_YAW, 60.0)
    ex, ey = lane1.coords[-1]
    conn = _line(ex, ey, EGO_YAW + 0.5, 10.0)
    cx, cy = conn.coords[-1]
    lane2 = _line(cx, cy, EGO_YAW + 0.5, 30.0)
    branch = _line(ex, ey, EGO_YAW - 0.6, 25.0)
    layers = {
        "lanes_polygons": [MapFeature(1, lane1.buffer(1.8, cap_style="flat"), {"lane_group_fid": 100}),
                           MapFeature(2, lane2.buffer(1.8, cap_style="flat"), {"lane_group_fid": 300}),
                           MapFeature(3, branch.buffer(1.8, cap_style="flat"), {"lane_group_fid": 400})],
        "lane_connectors": [MapFeature(5, conn, {"lane_group_connector_fid": 200})],
        "baseline_paths": [MapFeature(10, lane1, {"lane_fid": 1, "lane_connector_fid": None}),
                           MapFeature(11, conn, {"lane_fid": None, "lane_connector_fid": 5}),
                           MapFeature(12, lane2, {"lane_fid": 2, "lane_connector_fid": None}),
                           MapFeature(13, branch, {"lane_fid": 3, "lane_connector_fid": None})],
        "road_segments": [MapFeature(20, lane1.buffer(6.0), {})],
    }
    return VectorMap(location=LOCATION, version="9.15.1915", epsg=32611, layers=layers)


def write_dataset(root: Path) -> Dataset:
    """Write the test log, its blobs and the maps tree under `root` (documented layout)."""
    base = default_rig(IMG_W, IMG_H)
    rig = Rig(cameras={c: base.cameras[c] for c in CHANNELS}, T_ego_from_lidar=T_EGO_FROM_LIDAR)
    writer = LogWriter(root, LOG_NAME, LOCATION, rig, "veh-35", T0_US, jpeg_quality=95)
    for i in range(NUM_SCENES * SWEEPS_PER_SCENE):
        tags = (("following_lane_with_lead", VEHICLE_ID), ("changing_lane", None)) if i == 10 else ()
        tags = (("stationary", None),) if i == 13 else tags
        snap = WorldSnapshot(timestamp_us=T0_US + i * DT_US, ego=ego_at(i), actors=actors_at(i),
                             scenario_tags=tags)
        images = {c: _image(i, c) for c in CHANNELS} if i % 2 == 0 else None
        writer.add_sweep(snap, lidar_points(i), images, scene_index=i // SWEEPS_PER_SCENE)
    db = writer.close([ROUTE_IDS] * NUM_SCENES)
    write_maps(root / "maps", [SimpleNamespace(location=LOCATION, version="9.15.1915", epsg=32611,
                                               vector_map=make_map())])
    return Dataset(root=root, db=db, blobs=root / "nuplan-v1.1" / "sensor_blobs", maps=root / "maps")
