"""One typed config tree, loaded from params.yaml and validated before any work starts.

Every top-level section of params.yaml maps to one frozen dataclass here and to one `params:` entry in dvc.yaml.
Fields declare their unit in the comment and their allowed range through `_f(..., ge=/gt=/le=/lt=)`. The loader
rejects unknown keys, wrong types and out-of-range values with a `ConfigError` that names the dotted key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from drivepipe.utils.typed_config import ConfigError, UniqueKeyLoader, build, to_dict
from drivepipe.utils.typed_config import config_hash as config_hash  # re-exported for the stages

CAMERA_CHANNELS = ("CAM_F0", "CAM_B0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2")
LOCATIONS = ("us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood", "sg-one-north")
STAGES = ("download", "preprocess", "train", "evaluate", "carla_eval")
RUN_ONLY: tuple[str, ...] = ()  # `stages=RUN_ONLY`: changes no output, so changing it reruns no stage
# the stages that read a section's fields unless a field says otherwise (`_f(stages=...)`)
SECTION_STAGES = {"data": ("download", "preprocess", "carla_eval"),
                  "preprocess": ("preprocess", "train", "evaluate", "carla_eval"),
                  "augment": ("train",), "model": ("train", "evaluate", "carla_eval"), "loss": ("train",),
                  "train": ("train",), "evaluate": ("evaluate",), "carla_eval": ("carla_eval",)}


def _f(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
       lt: float | None = None, stages: tuple[str, ...] | None = None, identity: bool = True) -> Any:
    """A dataclass field with a default, an optional numeric range checked by the loader, and what it changes.

    stages: the DVC stages whose outputs the field changes (None = its section's `SECTION_STAGES`; `RUN_ONLY` = none:
        a speed, resource or logging knob); those stages list it under `params:` in dvc.yaml (tests/test_dvc_params.py).
    identity: False when the field changes which files a stage keeps or where it writes them, but not a cached sample
        or a trained weight; such fields stay out of the cache header hash and the checkpoints' resume hash.
    """
    meta = {"bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
            "stages": stages, "identity": identity}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _sub(cls: type) -> Any:
    return field(default_factory=cls)


# ----------------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    seed: int = _f(1234)                      # world seed; same seed -> byte-identical dataset
    locations: list[str] = _f(list(LOCATIONS))  # one map per location; logs cycle through them
    num_logs: int = _f(10, ge=1)              # number of .db logs
    scenes_per_log: int = _f(10, ge=5)         # nuPlan drops 2 + 2 scenes per log, so >= 5
    # s, length of one scene; >= 4 s gives every scenario >= 8 s of future (2 dropped scenes) and >= 2 s of history
    scene_duration_s: float = _f(6.0, gt=0.5, le=20.0)
    image_width: int = _f(256, ge=32)         # px, written camera resolution (real nuPlan: 1920)
    image_height: int = _f(144, ge=32)        # px (real nuPlan: 1080)
    jpeg_quality: int = _f(90, ge=10, le=100)
    # camera frames written (the DB's image rows and their JPEGs; lidar stays 20 Hz): every `camera_stride`-th frame of
    # the 10 Hz cameras, and none in the first/last two scenes of a log unless `edge_scene_cameras` (the devkit never
    # anchors a scenario there). Like the public sensor release, which holds a part of the recorded frames.
    camera_stride: int = _f(3, ge=1)
    edge_scene_cameras: bool = _f(False)
    # lidar point clouds written: "camera_frames" only for the sweeps with a written camera frame (every anchor
    # preprocess can read; the other sweeps keep their lidar_pc row, boxes and tags, and their .pcd is unreleased,
    # as most of nuPlan's are), or "all" for every 20 Hz sweep. Preprocess with `cameras: []` anchors on every
    # sweep and needs "all".
    lidar_release: Literal["camera_frames", "all"] = _f("camera_frames")
    num_vehicles: int = _f(80, ge=0)          # moving vehicles per log (more jam the permissive turns)
    num_bicycles: int = _f(10, ge=0)
    num_pedestrians: int = _f(160, ge=0)
    num_static: int = _f(32, ge=0)             # cones, barriers, czone signs, generic objects
    parked_fill: float = _f(1.0, ge=0.0, le=1.0)  # fraction of kerb spaces (one car + 0.8-2.5 m) holding a parked car
    lidar_beams: int = _f(32, ge=4)
    lidar_azimuth_step_deg: float = _f(0.6, gt=0.0, le=10.0)  # deg between rays of one beam
    lidar_max_range_m: float = _f(70.0, gt=5.0)  # m
    workers: int = _f(2, ge=1, stages=RUN_ONLY)  # processes, one log each (output does not depend on it)


@dataclass(frozen=True, kw_only=True)
class RemoteFile:
    url: str = _f("")                          # http(s):// or file path of an archive
    sha256: str = _f("")                       # expected hex digest ("" = not checked)
    size: int = _f(0, ge=0)                    # expected bytes (0 = not checked)


@dataclass(frozen=True, kw_only=True)
class NuplanSourceConfig:
    archives: list[str] = _f([])               # local .zip/.tar archives of nuPlan-mini (dbs, maps, sensors)
    folders: list[str] = _f([])                # already extracted folders to link/copy in
    urls: list[RemoteFile] = _f([])            # user's own (signed) links; nuPlan needs a login
    download_dir: str = _f("data/downloads", stages=RUN_ONLY)  # where partial and finished archives live (resumable)
    timeout_s: float = _f(30.0, gt=0.0, stages=RUN_ONLY)  # s, per HTTP read
    retries: int = _f(3, ge=0, stages=RUN_ONLY)
    # extraction limits: the largest real nuPlan-mini archive is ~74 GB (nuplan-format.md §1.4) and mostly JPEG/PCD,
    # which barely compress; a zip bomb expands 100-1000x (safety limits: a finished dataset does not depend on them)
    max_extract_gb: float = _f(500.0, gt=0.0, stages=RUN_ONLY)  # GB (1e9 bytes), most one archive may expand to
    max_extract_ratio: float = _f(50.0, ge=1.0, stages=RUN_ONLY)  # expanded bytes / archive bytes


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    source: Literal["synthetic", "nuplan"] = _f("synthetic")
    root: str = _f("data/nuplan_mini", identity=False)  # dataset root in the documented nuPlan layout
    missing_blob_policy: Literal["fail", "skip"] = _f("skip")  # real DBs reference missing blobs (devkit #388)
    synthetic: SyntheticConfig = _sub(SyntheticConfig)
    nuplan: NuplanSourceConfig = _sub(NuplanSourceConfig)


# ----------------------------------------------------------------------------------------------------- preprocess
@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    cameras: list[str] = _f(["CAM_F0", "CAM_L0", "CAM_R0", "CAM_L2", "CAM_R2", "CAM_B0"])
    image_width: int = _f(128, ge=16)          # px after undistort + resize (GPU profile 640)
    image_height: int = _f(72, ge=16)          # px (GPU profile 384)
    # how images are stored in LMDB: raw uint8 at the small CPU default (JPEG would save a third of the bytes but
    # costs an encode per image and ~2.5x slower reads); JPEG at the GPU profile's 640x384 (raw is ~9.5x the bytes)
    image_storage: Literal["jpeg", "raw"] = _f("raw")
    jpeg_quality: int = _f(95, ge=10, le=100)
    lidar_max_range_m: float = _f(60.0, gt=1.0)  # m, points farther (in x-y) are dropped
    lidar_z_min_m: float = _f(-1.0)            # m, ego frame
    lidar_z_max_m: float = _f(4.0)             # m, ego frame
    intensity_max: float = _f(255.0, gt=0.0)   # raw intensity divided by this, clipped to [0, 1]
    max_points: int = _f(40000, ge=100)        # points kept per sweep (nearest first)
    pillar_size_m: float = _f(0.25, gt=0.0)    # m, pillar edge; nests with the BEV cells (_check_pillar_grid)
    bev_size: int = _f(80, ge=8)              # cells per side of the BEV grid (GPU profile 200)
    bev_resolution_m: float = _f(0.5, gt=0.0)  # m per BEV cell
    seg_classes: list[str] = _f(["drivable_area", "lane", "lane_divider", "crosswalk"])
    occupancy_future_steps: int = _f(2, ge=0)  # future occupancy frames at traj_dt_s
    history_steps: int = _f(4, ge=1)           # past samples at traj_dt_s (excluding now)
    future_steps: int = _f(6, ge=1)            # future samples at traj_dt_s
    traj_dt_s: float = _f(0.5, gt=0.0)         # s between trajectory samples
    # scenario candidates between consecutive samples; with cameras the candidates are the sweeps that have images
    # (the synthetic default writes 5 Hz frames: every one is a sample; real nuPlan's 10 Hz: every second), else
    # every sweep
    window_stride: int = _f(1, ge=1)
    val_logs: int = _f(2, ge=1)                # whole logs held out for val (checkpoint selection, early stopping)
    test_logs: int = _f(4, ge=1)               # whole logs held out for test (what evaluate / carla_eval report)
    max_agents: int = _f(48, ge=1)             # agents kept for prediction (nearest first)
    workers: int = _f(2, ge=1, stages=RUN_ONLY)  # processes over logs
    # skip or stop at a log that fails to read; a finished cache does not depend on it
    failure_policy: Literal["fail", "skip"] = _f("skip", stages=RUN_ONLY)
    # share (0-1) of windows skipped before it fails; like failure_policy, a finished cache does not depend on it
    max_skipped_fraction: float = _f(0.1, ge=0.0, le=1.0, stages=RUN_ONLY)
    # this machine's shard of the log list (merged by `drivepipe merge-shards` into the same cache bytes)
    shard_index: int = _f(0, ge=0, stages=("preprocess",), identity=False)
    shard_count: int = _f(1, ge=1, stages=("preprocess",), identity=False)

    def __post_init__(self) -> None:
        if self.lidar_z_max_m <= self.lidar_z_min_m:
            raise ConfigError("preprocess.lidar_z_max_m: must be greater than preprocess.lidar_z_min_m")
        if self.shard_index >= self.shard_count:
            raise ConfigError("preprocess.shard_index: must be < preprocess.shard_count")
        bad = [c for c in self.cameras if c not in CAMERA_CHANNELS]
        if bad or not self.cameras:
            raise ConfigError(f"preprocess.cameras: unknown channel(s) {bad}; choose from {list(CAMERA_CHANNELS)}")
        _check_pillar_grid(self.pillar_size_m, self.bev_resolution_m, self.bev_size)
        known = {"drivable_area", "lane", "lane_divider", "crosswalk", "walkway", "stop_line", "intersection"}
        if not set(self.seg_classes) <= known or not self.seg_classes:
            raise ConfigError(f"preprocess.seg_classes: must be a non-empty subset of {sorted(known)}")

    @property
    def bev_extent_m(self) -> float:
        """Half the side of the square BEV area centred on the ego rear axle, in metres."""
        return self.bev_size * self.bev_resolution_m / 2.0


def _whole(x: float) -> int:
    """round(x) when x is a whole number >= 1 (to 1e-6 relative), else 0."""
    k = round(x)
    return k if k >= 1 and abs(x - k) <= 1e-6 * max(1.0, x) else 0


def _check_pillar_grid(pillar_m: float, res_m: float, bev_size: int) -> None:
    """The pillar grid must nest with the BEV grid (same square): a whole number of pillars per BEV cell, or a whole
    number k of BEV cells per pillar with k dividing bev_size. Then every BEV cell edge is a pillar edge (or the
    reverse), and cache, augmentation and encoder index the same n = 2E / pillar_size_m pillars."""
    per_cell, per_pillar = _whole(res_m / pillar_m), _whole(pillar_m / res_m)
    if not per_cell and not (per_pillar and bev_size % per_pillar == 0):
        raise ConfigError(
            f"preprocess.pillar_size_m: {pillar_m} m does not align with the BEV grid (preprocess.bev_resolution_m "
            f"{res_m} m, preprocess.bev_size {bev_size}); bev_resolution_m / pillar_size_m must be a whole number, "
            f"or pillar_size_m / bev_resolution_m a whole number dividing bev_size")


# ------------------------------------------------------------------------------------------------------- augment
@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    enabled: bool = _f(True)                   # train split only; validation is never augmented
    hflip_prob: float = _f(0.5, ge=0.0, le=1.0)  # mirror y -> -y: images, lidar, boxes, rasters, trajectories
    brightness: float = _f(0.2, ge=0.0, le=1.0)  # max relative brightness change
    contrast: float = _f(0.2, ge=0.0, le=1.0)
    saturation: float = _f(0.2, ge=0.0, le=1.0)
    point_dropout: float = _f(0.1, ge=0.0, lt=1.0)  # share of lidar points dropped
    point_noise_std_m: float = _f(0.02, ge=0.0)  # m, Gaussian jitter on x, y, z


# --------------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    use_camera: bool = _f(True)
    use_lidar: bool = _f(True)
    backbone: Literal["resnet18", "resnet34", "resnet50", "efficientnet_b0", "tiny"] = _f("tiny")
    # local file, never downloaded: a model.safetensors exported by train (whole-model warm start) or a torchvision
    # state_dict of the camera trunk's classification network (.pt/.pth)
    pretrained_path: str = _f("", stages=("train",))
    image_channels: int = _f(16, ge=4)         # camera context channels lifted to BEV
    pillar_channels: int = _f(16, ge=4)
    bev_channels: int = _f(32, ge=8)
    bev_blocks: int = _f(1, ge=1)              # residual blocks per BEV stage
    num_modes: int = _f(6, ge=1)               # trajectory modes K
    agent_hidden: int = _f(32, ge=8)
    planning_head: bool = _f(False)            # imitation of the expert future; off by default
    max_detections: int = _f(100, ge=1)
    depth_min_m: float = _f(2.0, gt=0.0)       # m, first lift-splat depth bin
    depth_max_m: float = _f(42.0, gt=0.0)      # m, last depth bin edge
    num_depth_bins: int = _f(40, ge=2)
    feature_downsample: int = _f(8, ge=1)      # image px per camera-feature cell

    def __post_init__(self) -> None:
        if not (self.use_camera or self.use_lidar):
            raise ConfigError("model.use_camera / model.use_lidar: at least one branch must be on")
        if self.depth_max_m <= self.depth_min_m:
            raise ConfigError("model.depth_max_m: must be greater than model.depth_min_m")

    @property
    def warm_start_path(self) -> str:
        """`pretrained_path` when it names whole-model weights exported by train (`.safetensors`), else ""."""
        return self.pretrained_path if self.pretrained_path.endswith(".safetensors") else ""

    @property
    def trunk_weights_path(self) -> str:
        """`pretrained_path` when it names a torchvision classification network's state_dict, else ""."""
        return "" if self.warm_start_path else self.pretrained_path


# ---------------------------------------------------------------------------------------------------------- loss
@dataclass(frozen=True, kw_only=True)
class LossConfig:
    balancing: Literal["static", "uncertainty"] = _f("static")
    det_weight: float = _f(1.0, ge=0.0)
    seg_weight: float = _f(1.0, ge=0.0)
    occ_weight: float = _f(1.0, ge=0.0)
    pred_weight: float = _f(1.0, ge=0.0)
    plan_weight: float = _f(1.0, ge=0.0)
    box_weight: float = _f(0.25, ge=0.0)       # L1 box regression relative to the focal heatmap term
    dice_weight: float = _f(1.0, ge=0.0)
    occ_pos_weight: float = _f(8.0, gt=0.0)   # BCE weight of occupied cells (rare) against free ones
    nll_weight: float = _f(0.1, ge=0.0)
    mode_cls_weight: float = _f(0.5, ge=0.0)
    focal_alpha: float = _f(2.0, gt=0.0)
    focal_beta: float = _f(4.0, gt=0.0)


# --------------------------------------------------------------------------------------------------------- train
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # checkpoints/<experiment>/ and models/<experiment>/
    experiment: str = _f("default", stages=("train", "evaluate", "carla_eval"), identity=False)
    seed: int = _f(0, stages=("train", "evaluate"))
    epochs: int = _f(4, ge=1)
    batch_size: int = _f(4, ge=1)
    accumulate: int = _f(1, ge=1)              # micro-batches per optimizer step
    lr: float = _f(2e-3, gt=0.0)
    weight_decay: float = _f(1e-4, ge=0.0)
    schedule: Literal["cosine", "step", "constant"] = _f("cosine")
    warmup_steps: int = _f(20, ge=0)           # optimizer steps
    step_every_epochs: int = _f(4, ge=1)       # step schedule period
    step_gamma: float = _f(0.3, gt=0.0, le=1.0)
    grad_clip: float = _f(5.0, ge=0.0)         # max global grad norm (0 = off)
    amp: Literal["fp32", "fp16", "bf16"] = _f("fp32")  # "fp32" = AMP off (not "off": YAML 1.1 reads it as false)
    device: Literal["auto", "cpu", "cuda"] = _f("auto", stages=("train", "carla_eval"))
    workers: int = _f(1, ge=0, stages=RUN_ONLY)  # DataLoader processes (samples and order do not depend on it)
    pin_memory: bool = _f(False, stages=RUN_ONLY)
    persistent_workers: bool = _f(True, stages=RUN_ONLY)
    prefetch_factor: int = _f(2, ge=1, stages=RUN_ONLY)  # batches loaded ahead per worker
    group_by_size: bool = _f(True)             # batch samples of similar point count together
    log_every_steps: int = _f(5, ge=1, stages=RUN_ONLY)  # optimizer steps between logged step metrics
    save_every_epochs: int = _f(2, ge=1, identity=False)
    keep_top_k: int = _f(2, ge=1, identity=False)
    max_nonfinite_in_row: int = _f(5, ge=1, stages=RUN_ONLY)  # abort after this many skipped non-finite steps
    deterministic: bool = _f(True)
    cudnn_benchmark: bool = _f(False)
    val_metric: str = _f("val/score", identity=False)  # higher is better; decides `best`
    closed_loop_every_epochs: int = _f(0, ge=0, identity=False)  # 0 = off
    max_steps: int = _f(0, ge=0, identity=False)  # stop after this many optimizer steps (0 = no cap)


# ------------------------------------------------------------------------------------------------------ evaluate
_VALIDATION = ("train", "evaluate")  # thresholds of the metrics that train's validation shares (val/score picks best)
@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    checkpoint: Literal["best", "latest"] = _f("best")
    batch_size: int = _f(4, ge=1)
    score_threshold: float = _f(0.05, ge=0.0, le=1.0, stages=_VALIDATION)   # detections kept for mAP
    seg_threshold: float = _f(0.5, gt=0.0, lt=1.0, stages=_VALIDATION)
    occ_threshold: float = _f(0.5, gt=0.0, lt=1.0, stages=_VALIDATION)
    # confident modes for mode precision/recall
    mode_score_threshold: float = _f(0.2, ge=0.0, le=1.0, stages=_VALIDATION)
    miss_threshold_m: float = _f(2.0, gt=0.0, stages=_VALIDATION)  # m, miss / hit distance (both conventions)
    moving_threshold_m: float = _f(1.0, gt=0.0)         # m, an agent is moving when its GT future gets this far
    e2e_score_threshold: float = _f(0.3, ge=0.0, le=1.0)  # detections forecast end to end (EPA operating point)
    num_pictures: int = _f(3, ge=0)


# ----------------------------------------------------------------------------------------------------- carla_eval
@dataclass(frozen=True, kw_only=True)
class CarlaServerConfig:
    host: str = _f("127.0.0.1", stages=RUN_ONLY)
    port: int = _f(2000, ge=1, le=65535, stages=RUN_ONLY)
    probe_timeout_s: float = _f(2.0, gt=0.0, stages=RUN_ONLY)  # s
    timeout_s: float = _f(10.0, gt=0.0, stages=RUN_ONLY)  # s
    retries: int = _f(2, ge=0, stages=RUN_ONLY)
    fixed_delta_s: float = _f(0.05, gt=0.0)
    routes_file: str = _f("")                  # leaderboard-style XML
    town: str = _f("Town01")
    traffic_manager_port: int = _f(8000, ge=1, le=65535, stages=RUN_ONLY)
    servers: list[str] = _f([], stages=RUN_ONLY)  # "host:port" servers run in parallel, one scenario each at a time;
                                               # empty = the one host:port above


@dataclass(frozen=True, kw_only=True)
class ClosedLoopConfig:
    backend: Literal["embedded", "carla"] = _f("embedded")
    on_unavailable: Literal["fail", "record"] = _f("record")  # when the backend cannot be reached
    checkpoint: Literal["best", "latest"] = _f("latest")
    num_scenarios: int = _f(12, ge=1)          # typed scenarios from the test logs (sim/scenarios.py)
    duration_s: float = _f(15.0, gt=0.0)       # s per scenario (shorter only when a log is shorter)
    step_s: float = _f(0.1, gt=0.0)            # s per tick (10 Hz)
    # non-reactive (replay) and reactive (idm) agents, each reported (nuPlan's two closed-loop modes)
    agents: list[Literal["replay", "idm"]] = _f(["replay", "idm"])
    goal_beyond_m: float = _f(30.0, gt=0.0)    # m the route's goal lies past what the expert drove
    baselines: list[Literal["stationary", "constant_velocity", "expert", "privileged"]] = _f(
        ["stationary", "constant_velocity", "expert", "privileged"])
    workers: int = _f(2, ge=1)                 # worker processes (embedded backend)
    planner: Literal["route_follower", "imitation"] = _f("route_follower")
    controller: Literal["pure_pursuit", "lqr"] = _f("pure_pursuit")
    max_failure_rate: float = _f(0.25, ge=0.0, le=1.0)
    target_speed_mps: float = _f(8.0, gt=0.0)
    # detection score (sigmoid, 0-1) of the boxes the agent's tracker and planner believe in (mAP uses all scores
    # above evaluate.score_threshold)
    detection_score_threshold: float = _f(0.3, gt=0.0, lt=1.0)
    animation: bool = _f(True)                 # write a top-down GIF per scenario
    seed: int = _f(0)
    carla: CarlaServerConfig = _sub(CarlaServerConfig)

    def __post_init__(self) -> None:
        if not self.agents or len(set(self.agents)) != len(self.agents):
            raise ConfigError(f"carla_eval.agents: one or both of replay, idm without repeats, got {self.agents}")
        for s in self.carla.servers:
            host, _, port = s.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ConfigError(f"carla_eval.carla.servers: {s!r} is not host:port")


@dataclass(frozen=True, kw_only=True)
class Config:
    data: DataConfig = _sub(DataConfig)
    preprocess: PreprocessConfig = _sub(PreprocessConfig)
    augment: AugmentConfig = _sub(AugmentConfig)
    model: ModelConfig = _sub(ModelConfig)
    loss: LossConfig = _sub(LossConfig)
    train: TrainConfig = _sub(TrainConfig)
    evaluate: EvaluateConfig = _sub(EvaluateConfig)
    carla_eval: ClosedLoopConfig = _sub(ClosedLoopConfig)


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a `Config` from a plain mapping (the parsed params.yaml)."""
    return build(Config, raw, "")


def load(path: str | Path = "params.yaml") -> Config:
    """Read params.yaml and return the validated config; raises `ConfigError` naming the bad key.

    Unlike `from_dict`, a file must give every top-level section: DVC tracks those keys, so a section that is
    missing (or an empty file) would silently run on defaults that DVC never sees.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: empty or not a mapping; it must hold the sections {_SECTIONS}")
    missing = [name for name in _SECTIONS if not isinstance(raw.get(name), dict)]
    if missing:
        raise ConfigError(f"{missing[0]}: section missing or empty in {path} (DVC tracks its keys; "
                          "copy it from the repository's params.yaml)")
    return from_dict(raw)


_SECTIONS = [f.name for f in dataclasses.fields(Config)]


# ------------------------------------------------------------------------------------------ what each key changes
def leaf_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every leaf of the config tree, in params.yaml order (nested sections recurse)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(leaf_fields(hints[f.name], key))
        else:
            out.append((key, f))
    return out


def key_stages(dotted: str, f: dataclasses.Field) -> tuple[str, ...]:
    """The stages whose outputs the leaf `dotted` changes (its field's `stages`, else its section's)."""
    stages = f.metadata["stages"]
    return SECTION_STAGES[dotted.split(".")[0]] if stages is None else stages


def is_identity(dotted: str, f: dataclasses.Field) -> bool:
    """Whether the leaf belongs in content hashes (cache header, resume identity): it changes outputs and is not
    marked `identity=False`."""
    return bool(key_stages(dotted, f)) and f.metadata["identity"]


def dvc_params(stage: str) -> list[str]:
    """The `params:` list of `stage` in dvc.yaml: every key whose value changes the stage's outputs, a whole
    (sub)section written as its name when all of its leaves count."""
    leaves = leaf_fields()
    used = {key for key, f in leaves if stage in key_stages(key, f)}

    def collapse(prefix: str) -> list[str]:
        mine = [k for k, _ in leaves if k.startswith(prefix + ".")]
        if mine and all(k in used for k in mine):
            return [prefix]
        children = dict.fromkeys(k[len(prefix) + 1:].split(".")[0] for k in mine)
        out = []
        for child in children:
            key = f"{prefix}.{child}"
            out.extend(collapse(key) if any(k.startswith(key + ".") for k in mine) else [key] * (key in used))
        return out

    return [key for section in SECTION_STAGES for key in collapse(section)]


def identity_dict(section: Any, prefix: str) -> dict[str, Any]:
    """`to_dict(section)` without the leaves that are not `is_identity` (speed knobs, output names, caps):
    what content hashes cover. `prefix` is the section's dotted key (e.g. "data")."""
    fields = dict(leaf_fields(type(section), prefix))
    out: dict[str, Any] = {}
    for name, value in to_dict(section).items():
        key = f"{prefix}.{name}"
        if isinstance(value, dict) and key not in fields:
            out[name] = identity_dict(getattr(section, name), key)
        elif is_identity(key, fields[key]):
            out[name] = value
    return out
