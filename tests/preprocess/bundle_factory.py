"""Hand-built `SensorBundle`s with known calibration, distortion, lidar, boxes, agents and map layers."""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString, Polygon

from drivepipe.config import Config, PreprocessConfig, from_dict
from drivepipe.schema import (AgentTracks, Annotations, BundleMeta, Boxes, CameraCalibration, CameraFrame, EgoState,
                              LidarSweep, SensorBundle)

CAM_YAW_DEG = {"CAM_F0": 0.0, "CAM_L0": 60.0, "CAM_R0": -60.0, "CAM_L2": 120.0, "CAM_R2": -120.0, "CAM_B0": 180.0}
DISTORTION = np.array([-0.25, 0.08, 0.001, -0.0015, -0.01])


def camera_calibration(channel: str, width: int = 320, height: int = 192,
                       distortion: np.ndarray = DISTORTION) -> CameraCalibration:
    """A pinhole camera 1.6 m above the rear axle looking along yaw CAM_YAW_DEG[channel] (OpenCV axes)."""
    yaw = np.deg2rad(CAM_YAW_DEG[channel])
    fwd, right, down = [np.cos(yaw), np.sin(yaw), 0.0], [np.sin(yaw), -np.cos(yaw), 0.0], [0.0, 0.0, -1.0]
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, fwd], axis=1)
    T[:3, 3] = [1.5, 0.0, 1.6]
    K = np.array([[0.6 * width, 0, width / 2 - 3.0], [0, 0.6 * width, height / 2 + 2.0], [0, 0, 1.0]])
    return CameraCalibration(channel, width, height, K, np.asarray(distortion, float), T)


def small_preprocess(**overrides) -> PreprocessConfig:
    """A tiny preprocess config for fast tests (2 cameras, 64 x 64 BEV at 0.5 m)."""
    base = dict(cameras=["CAM_F0", "CAM_L0"], image_width=80, image_height=48, bev_size=64, bev_resolution_m=0.5,
                max_points=500, history_steps=2, future_steps=3, occupancy_future_steps=2, max_agents=4,
                workers=1, val_logs=1, test_logs=1)
    base.update(overrides)
    return PreprocessConfig(**base)


def small_config(**overrides) -> Config:
    """A whole Config whose preprocess section is `small_preprocess(**overrides)`."""
    prep = {k: v for k, v in small_preprocess(**overrides).__dict__.items()}
    return from_dict({"preprocess": prep})


def make_bundle(channels=("CAM_F0", "CAM_L0"), seed: int = 0, token: str = "00" * 8, log_name: str = "log_a",
                location: str = "us-ma-boston", num_points: int = 2000, history_steps: int = 2,
                future_steps: int = 3, with_annotations: bool = True) -> SensorBundle:
    """A SensorBundle built by hand; every array is deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    cams = {}
    for ch in channels:
        cal = camera_calibration(ch)
        img = rng.integers(0, 256, (cal.height, cal.width, 3), dtype=np.uint8)
        cams[ch] = CameraFrame(cal, img, 1_000_000)
    pts = np.zeros((num_points, 6), np.float32)
    pts[:, :2] = rng.uniform(-30, 30, (num_points, 2))
    pts[:, 2] = rng.uniform(-2, 5, num_points)
    pts[:, 3] = rng.uniform(0, 300, num_points)
    hist = np.zeros((history_steps + 1, 3))
    hist[:, 0] = np.linspace(-2.0 * history_steps, 0, history_steps + 1)
    ego = EgoState(np.eye(4), np.array([4.0, 0.1, 0.0]), np.array([0.5, -0.2, 0.0]), np.array([0, 0, 0.05]),
                   hist, np.ones(history_steps + 1, bool))
    ann = _annotations(rng, history_steps, future_steps) if with_annotations else None
    meta = BundleMeta(log_name, token, 1_000_000, location, "stationary")
    return SensorBundle(meta, cams, LidarSweep(pts, 1_000_000), ego, ann)


def _annotations(rng: np.random.Generator, th: int, tf: int) -> Annotations:
    center = np.array([[10.0, 0.0, 0.8], [-5.0, 4.0, 0.8], [3.0, -6.0, 0.5], [100.0, 0.0, 0.5], [0.0, 12.0, 0.3]])
    size = np.array([[4.5, 2.0, 1.6], [4.0, 1.8, 1.5], [0.6, 0.6, 1.7], [4.5, 2.0, 1.6], [0.4, 0.4, 0.8]])
    yaw = np.array([0.0, np.pi / 2, 0.3, 0.0, 0.0])
    vel = np.array([[5.0, 0.0], [0.0, 3.0], [1.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    boxes = Boxes(center, size, yaw, vel, np.array([0, 0, 2, 0, 3]), np.array([11, 12, 13, 14, 15]))
    agent_rows = np.array([0, 1, 2, 3])
    hist = np.zeros((4, th + 1, 3))
    fut = np.zeros((4, tf, 3))
    for a, r in enumerate(agent_rows):
        v = vel[r]
        for k in range(th + 1):
            hist[a, k] = [*(center[r, :2] - v * 0.5 * (th - k)), yaw[r]]
        for k in range(tf):
            fut[a, k] = [*(center[r, :2] + v * 0.5 * (k + 1)), yaw[r]]
    fut_valid = np.ones((4, tf), bool)
    fut_valid[2, -1] = False
    agents = AgentTracks(agent_rows, hist, np.ones((4, th + 1), bool), fut, fut_valid)
    layers = {
        "drivable_area": [Polygon([(-30, -5), (30, -5), (30, 5), (-30, 5)])],
        "lane": [Polygon([(-30, -5), (30, -5), (30, 0), (-30, 0)])],
        "lane_divider": [LineString([(-30, 0.0), (30, 0.0)])],
        "crosswalk": [Polygon([(8, -5), (10, -5), (10, 5), (8, 5)])],
    }
    ego_future = np.stack([np.arange(1, tf + 1) * 2.0, np.zeros(tf), np.zeros(tf)], axis=1)
    route = np.stack([np.linspace(-5, 60, 14), np.zeros(14)], axis=1)
    return Annotations(boxes, agents, layers, ego_future, np.ones(tf, bool), route)
