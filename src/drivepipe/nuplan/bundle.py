"""Build one `SensorBundle` from an open `NuplanLog` (schema.py is the contract).

Everything is read from the log's in-memory arrays (no SQL here); only the sensor files of the anchor sweep are
opened. Frames: the stored lidar points are moved into the ego frame with the stored lidar extrinsic; boxes, agent
tracks, the ego past/future and the route are expressed in the ego frame of the anchor sweep (rear axle, x forward,
y left). Trajectory samples sit at multiples of `dt_s` and use the sweep nearest in time, if closer than dt_s/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drivepipe.errors import DataError
from drivepipe.mapdata import SEMANTIC_LAYERS, VectorMap
from drivepipe.nuplan.db import MissingBlobError, NuplanLog
from drivepipe.nuplan.pcd import decode_point_cloud
from drivepipe.nuplan.records import nearest_index
from drivepipe.nuplan.route import route_in_ego, route_paths
from drivepipe.schema import (
    AGENT_CATEGORIES,
    CATEGORIES,
    CATEGORY_INDEX,
    AgentTracks,
    Annotations,
    Boxes,
    BundleMeta,
    CameraFrame,
    EgoState,
    LidarSweep,
    SensorBundle,
)
from drivepipe.utils import detmath
from drivepipe.utils.geometry import (
    global_to_ego_xy_yaw,
    invert,
    make_transform,
    quat_to_yaw,
    rotate_vectors_2d,
    transform_points,
    wrap_angle,
)
from drivepipe.utils.jpeg_warnings import decoder_warnings

_IS_AGENT = np.isin(np.arange(len(CATEGORIES)), [CATEGORY_INDEX[c] for c in AGENT_CATEGORIES])  # by category index
_REDUCED_FLAG = {1: 0, 2: 16, 4: 32, 8: 64}  # cv2.IMREAD_REDUCED_* bits added to a colour flag


def load_bundle(log: NuplanLog, token: str, channels: Sequence[str], history_steps: int, future_steps: int,
                dt_s: float, map_radius_m: float, with_annotations: bool = True,
                image_min_size: tuple[int, int] | None = None, map_classes: Sequence[str] | None = None
                ) -> SensorBundle:
    """The frame of lidar_pc `token` as a SensorBundle.

    Args:
        log: open log.
        token: anchor lidar_pc token (16 hex).
        channels: camera channels wanted; a channel with no image within ±50 ms (or a skipped missing file) is
            left out of `cameras` and counted in `log.skipped`.
        history_steps / future_steps: trajectory samples before / after now, `dt_s` seconds apart.
        map_radius_m: half-side (m) of the square of map geometry kept around the ego.
        with_annotations: False leaves `annotations` None (and does not touch the map).
        image_min_size: (W, H) px the images are wanted at (preprocess.image_width / image_height): each JPEG is
            decoded at the largest reduction 1/2, 1/4 or 1/8 that stays at least that big (`CameraFrame.downscale`),
            which costs a fraction of a full decode. None decodes at full size.
        map_classes: the semantic map classes (`mapdata.SEMANTIC_LAYERS` keys) to put in `map_layers`; None: all.

    Raises:
        DataError: unknown token; a missing lidar file (`MissingBlobError`; the policy decides for cameras);
            a corrupt point cloud or JPEG; an image whose size differs from its calibration.
    """
    index = log.token_index.get(token)
    if index is None:
        raise DataError(log.db_path, f"lidar_pc token {token!r} not in this log")
    pcs = log.lidar_pcs
    t_us = int(pcs.timestamp_us[index])
    lidar = _lidar(log, index)  # first: a sweep without its point cloud is dropped whatever the cameras
    cameras = _cameras(log, index, channels, image_min_size)
    T_global_from_ego = ego_transform(log, index)
    # the sweeps at -history_steps .. +future_steps x dt_s (oldest first; now at history_steps) and the ego's poses
    # there, from the log's table of every sweep's (built once per log)
    all_frames, all_poses, all_valid = trajectory_table(log, history_steps, future_steps, dt_s)
    frames, poses, poses_valid = all_frames[index], all_poses[index].copy(), all_valid[index].copy()
    n_hist = history_steps + 1
    ego = EgoState(T_global_from_ego=T_global_from_ego, velocity_mps=pcs.velocity[index].copy(),
                   acceleration_mps2=pcs.acceleration[index].copy(), angular_rate_rps=pcs.angular_rate[index].copy(),
                   history=poses[:n_hist], history_valid=poses_valid[:n_hist])
    annotations = None
    if with_annotations:
        annotations = _annotations(log, index, T_global_from_ego, frames[:n_hist], frames[n_hist:], poses[n_hist:],
                                   poses_valid[n_hist:], map_radius_m, map_classes)
    meta = BundleMeta(log_name=log.log_name, token=token, timestamp_us=t_us, location=log.location,
                      scenario_type=log.scenario_types.get(token, "unknown"), conditions=log.conditions)
    return SensorBundle(meta=meta, cameras=cameras, lidar=lidar, ego=ego, annotations=annotations)


# ------------------------------------------------------------------------------------------------- sensors
def read_jpeg(path: Path | str, downscale: int = 1) -> np.ndarray:
    """Decode a JPEG file -> (H, W, 3) uint8 RGB, at 1/downscale (1, 2, 4 or 8; libjpeg's DCT scaling) of its size.

    Raises:
        DataError: unreadable, truncated (no end-of-image marker) or undecodable file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read image ({exc.strerror or exc})") from None
    return decode_jpeg(data, path, downscale)


def decode_jpeg(data: bytes, source: Path | str, downscale: int = 1) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB at 1/downscale; errors name `source` (see `read_jpeg`)."""
    import cv2

    if downscale not in _REDUCED_FLAG:
        raise ValueError(f"JPEG downscale must be one of {sorted(_REDUCED_FLAG)}, got {downscale}")
    if not data.startswith(b"\xff\xd8"):
        raise DataError(source, "not a JPEG file (no start-of-image marker)")
    if b"\xff\xd9" not in data[-32:]:
        raise DataError(source, "JPEG is truncated (no end-of-image marker)")
    flags = cv2.IMREAD_COLOR_RGB | _REDUCED_FLAG[downscale]  # decoded straight to RGB, no copy
    with decoder_warnings() as warnings:
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if rgb is None or rgb.ndim != 3:
        raise DataError(source, "JPEG could not be decoded")
    if warnings:  # e.g. a file cut mid-stream: libjpeg fills the rest with grey and only warns
        raise DataError(source, f"JPEG is corrupt (decoder: {warnings[0].strip()})")
    return rgb


def jpeg_downscale(src_wh: tuple[int, int], out_wh: tuple[int, int]) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that keeps an image of `src_wh` at least `out_wh` big, so
    the resize after it never upsamples more than the full-size image would."""
    for factor in (8, 4, 2):
        if -(-src_wh[0] // factor) >= out_wh[0] and -(-src_wh[1] // factor) >= out_wh[1]:
            return factor
    return 1


def _lidar(log: NuplanLog, index: int) -> LidarSweep:
    rel = str(log.lidar_pcs.filename[index])
    blob = log.read_blob(rel, "lidar_pc.filename")
    if blob is None:  # policy "skip": a sweep without its point cloud cannot become a bundle
        raise MissingBlobError(log.blob_path(rel), "missing blob referenced by lidar_pc.filename (frame dropped)")
    points = decode_point_cloud(blob[1], blob[0])
    T = log.T_ego_from_lidar.astype(np.float32)  # float32 throughout: the points are float32 (mm-level is plenty)
    R, t = T[:3, :3], T[:3, 3]
    # column by column: numpy is several times slower on an (N, 3) slice of the (N, 6) rows
    if np.array_equal(R, np.eye(3)):  # a mounting without rotation: a shift
        for r in range(3):
            points[:, r] += t[r]
    else:
        x, y, z = (points[:, c].copy() for c in range(3))
        for r in range(3):
            points[:, r] = R[r, 0] * x + R[r, 1] * y + R[r, 2] * z + t[r]
    return LidarSweep(points=points, timestamp_us=int(log.lidar_pcs.timestamp_us[index]),
                      T_ego_from_lidar=log.T_ego_from_lidar.copy(), token=str(log.lidar_pcs.token[index]))


def _cameras(log: NuplanLog, index: int, channels: Sequence[str], image_min_size: tuple[int, int] | None
             ) -> dict[str, CameraFrame]:
    out: dict[str, CameraFrame] = {}
    for channel in channels:
        calib = log.cameras.get(channel)
        j = int(log.image_rows(channel)[index]) if calib is not None else -1
        if j < 0:
            log.skipped[f"no {channel} image within 50 ms"] += 1
            continue
        imgs = log.images[channel]
        blob = log.read_blob(str(imgs.filename[j]), "image.filename_jpg")
        if blob is None:
            continue
        path = blob[0]
        down = 1 if image_min_size is None else jpeg_downscale((calib.width, calib.height), image_min_size)
        image = decode_jpeg(blob[1], path, down)
        if image.shape != (-(-calib.height // down), -(-calib.width // down), 3):
            size = f"{image.shape[1] * down}x{image.shape[0] * down}" + (f" (decoded at 1/{down})" if down > 1 else "")
            raise DataError(path, f"image is {size} but camera {channel} is calibrated for "
                                  f"{calib.width}x{calib.height}")
        out[channel] = CameraFrame(calibration=calib, image=image, timestamp_us=int(imgs.timestamp_us[j]),
                                   token=str(imgs.token[j]), downscale=down)
    return out


# ------------------------------------------------------------------------------------------------- ego
def ego_transform(log: NuplanLog, index: int) -> np.ndarray:
    """(4, 4) T_global_from_ego of sweep `index` (its linked ego_pose, rear axle); all sweeps' are built once."""
    if "T_global_from_ego" not in log.derived:
        pcs = log.lidar_pcs
        log.derived["T_global_from_ego"] = np.stack([make_transform(q, t) for q, t in zip(pcs.quat, pcs.xyz)])
    return log.derived["T_global_from_ego"][index].copy()


def ego_yaws(log: NuplanLog) -> np.ndarray:
    """(N,) heading of every sweep's ego pose (`quat_to_yaw`), computed once per log."""
    if "ego_yaw" not in log.derived:
        w, x, y, z = log.lidar_pcs.quat.T
        log.derived["ego_yaw"] = detmath.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return log.derived["ego_yaw"]


def frames_at(timestamps_us: np.ndarray, t_us: int | np.ndarray, offsets_s: np.ndarray, tol_s: float) -> np.ndarray:
    """Index of the sweep nearest to each `t_us + offset` if closer than tol_s, -1 where there is none.

    The bound is strict so that with tol_s = dt/2 one sweep never serves two neighbouring samples.

    timestamps_us: (N,) sorted int64; offsets_s: (K,) seconds; t_us: a time, or an (M, 1) array of them.
    Returns (K,) (or (M, K)) int64.
    """
    targets = t_us + np.round(np.asarray(offsets_s, dtype=np.float64) * 1e6).astype(np.int64)
    return nearest_index(timestamps_us, targets, round(tol_s * 1e6), inclusive=False)


def trajectory_table(log: NuplanLog, history_steps: int, future_steps: int, dt_s: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every sweep as the anchor: the sweeps at -history_steps .. +future_steps x dt_s (`frames_at` with
    tolerance dt_s / 2; (N, K) int64, -1 where none), the ego's (x, y, yaw) there in the anchor's ego frame
    ((N, K, 3), zeros where invalid) and validity ((N, K) bool). Built once per log and step layout."""
    key = ("trajectories", history_steps, future_steps, dt_s)
    if key not in log.derived:
        ts = log.lidar_pcs.timestamp_us.astype(np.int64)
        frames = frames_at(ts, ts[:, None], dt_s * np.arange(-history_steps, future_steps + 1), dt_s / 2)
        valid = frames >= 0
        f = np.where(valid, frames, np.arange(len(ts))[:, None])
        yaw, xy = ego_yaws(log), log.lidar_pcs.xyz[:, :2]
        c, s = detmath.cos(yaw)[:, None], detmath.sin(yaw)[:, None]
        dx, dy = xy[f, 0] - xy[:, None, 0], xy[f, 1] - xy[:, None, 1]
        poses = np.stack([c * dx + s * dy, -s * dx + c * dy, wrap_angle(yaw[f] - yaw[:, None])], axis=-1)
        poses[~valid] = 0.0
        log.derived[key] = (frames, poses, valid)
    return log.derived[key]


# ------------------------------------------------------------------------------------------------- annotations
def _annotations(log: NuplanLog, index: int, T_global_from_ego: np.ndarray, hist_frames: np.ndarray,
                 fut_frames: np.ndarray, ego_future: np.ndarray, ego_future_valid: np.ndarray, map_radius_m: float,
                 map_classes: Sequence[str] | None) -> Annotations:
    """Ground truth of sweep `index`; the history / future sweeps and the ego's future poses come from
    `load_bundle`, which looks them up once for the ego and the agents."""
    boxes = _boxes_in_ego(log, index, T_global_from_ego)
    agents = _agent_tracks(log, index, boxes, hist_frames, fut_frames)
    vmap = log.load_map()
    route = _route(log, vmap, index, T_global_from_ego)
    if route.shape[0] < 2:  # no usable map route: the ego's own future path
        route = np.concatenate([np.zeros((1, 2)), ego_future[ego_future_valid, :2]], axis=0)
    map_layers = vmap.semantic_layers_in_ego(T_global_from_ego, map_radius_m,
                                             tuple(SEMANTIC_LAYERS if map_classes is None else map_classes))
    return Annotations(boxes=boxes, agents=agents, map_layers=map_layers, ego_future=ego_future,
                       ego_future_valid=ego_future_valid, route=route)


def _route(log: NuplanLog, vmap: VectorMap, index: int, T_global_from_ego: np.ndarray) -> np.ndarray:
    """Map route of the sweep's scene in the ego frame; the scene's route paths are looked up once per log."""
    token = str(log.lidar_pcs.scene_token[index])
    roadblocks = next((s.roadblock_ids for s in log.scenes if s.token == token), ())
    key = ("route_paths", roadblocks)
    if key not in log.derived:
        log.derived[key] = route_paths(vmap, roadblocks)
    return route_in_ego(log.derived[key], T_global_from_ego)


def _boxes_in_ego(log: NuplanLog, index: int, T_global_from_ego: np.ndarray) -> Boxes:
    table = log.boxes
    rows = table.rows(index)
    ego_yaw = float(detmath.arctan2(T_global_from_ego[1, 0], T_global_from_ego[0, 0]))
    yaw = (table.yaw[rows] - ego_yaw + np.pi) % (2 * np.pi) - np.pi
    return Boxes(center=transform_points(invert(T_global_from_ego), table.center[rows]),
                 size=table.size[rows].copy(), yaw=yaw,
                 velocity=rotate_vectors_2d(table.velocity[rows, :2], -ego_yaw),
                 category=table.category[rows].copy(), track_id=table.track_id[rows].copy())


def _agent_tracks(log: NuplanLog, index: int, boxes: Boxes, hist_frames: np.ndarray,
                  fut_frames: np.ndarray) -> AgentTracks:
    """Past/future (x, y, yaw) in the current ego frame of every agent box now, from the same track id."""
    box_index = np.flatnonzero(_IS_AGENT[boxes.category]).astype(np.int64)
    table = log.boxes
    frames = np.concatenate([hist_frames, fut_frames])
    track_ids = np.unique(boxes.track_id[box_index])  # sorted; agent a is track_ids[slot[a]]
    slot = np.searchsorted(track_ids, boxes.track_id[box_index])
    # row_of[k, u]: the table row of track track_ids[u] at frame k, -1 where it is absent
    row_of = np.full((len(frames), len(track_ids)), -1, np.int64)
    ok = np.flatnonzero(frames >= 0) if len(track_ids) else np.zeros(0, np.int64)
    if len(ok):
        starts, stops = table.offsets[frames[ok]], table.offsets[frames[ok] + 1]
        counts = stops - starts
        frame_of = np.repeat(ok, counts)  # k of every candidate row
        first = np.cumsum(counts) - counts  # where each frame's rows begin in the concatenation
        rows = np.repeat(starts - first, counts) + np.arange(counts.sum())
        tids = table.track_id[rows]
        pos = np.minimum(np.searchsorted(track_ids, tids), len(track_ids) - 1)
        hit = np.flatnonzero(track_ids[pos] == tids)
        row_of[frame_of[hit], pos[hit]] = rows[hit]
    agent_rows = row_of[:, slot].T  # (A, K)
    valid = agent_rows >= 0
    traj = np.zeros((len(box_index), len(frames), 3))
    pcs = log.lidar_pcs
    x0, y0, _ = pcs.xyz[index]
    r = agent_rows[valid]
    xy, yaw = global_to_ego_xy_yaw(table.center[r, :2], table.yaw[r], x0, y0, quat_to_yaw(pcs.quat[index]))
    traj[valid, :2], traj[valid, 2] = xy, yaw
    nh = len(hist_frames)
    return AgentTracks(box_index=box_index, history=traj[:, :nh], history_valid=valid[:, :nh],
                       future=traj[:, nh:], future_valid=valid[:, nh:])
