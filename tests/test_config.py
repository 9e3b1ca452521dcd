"""The typed config tree: params.yaml round-trips; bad keys, types and ranges are rejected naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drivepipe.config import Config, ConfigError, config_hash, from_dict, load, to_dict

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_round_trips_through_the_dataclasses():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = load(REPO / "params.yaml")
    assert to_dict(cfg) == raw  # every key in params.yaml is a field, every field is in params.yaml


def test_params_yaml_sections_match_dvc_yaml_params():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    declared = set()
    for stage in dvc["stages"].values():
        for entry in stage.get("params", []):
            declared.add(entry.split(".")[0] if isinstance(entry, str) else next(iter(entry)))
    assert declared == set(to_dict(Config()))


@pytest.mark.parametrize(("raw", "key"), [
    ({"loss": {"det_wieght": 2.0}}, "loss.det_wieght"),
    ({"bogus": {}}, "bogus"),
    ({"data": {"synthetic": {"num_logz": 3}}}, "data.synthetic.num_logz"),
])
def test_unknown_keys_are_rejected_by_name(raw, key):
    with pytest.raises(ConfigError, match=f"^{key}: unknown key"):
        from_dict(raw)


@pytest.mark.parametrize(("raw", "key"), [
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"deterministic": 1}}, "train.deterministic"),
    ({"loss": {"det_weight": "2"}}, "loss.det_weight"),
    ({"preprocess": {"cameras": "CAM_F0"}}, "preprocess.cameras"),
    ({"data": {"nuplan": {"urls": [{"url": 5}]}}}, r"data.nuplan.urls\[0\].url"),
])
def test_wrong_types_are_rejected_by_name(raw, key):
    with pytest.raises(ConfigError, match=f"^{key}: expected"):
        from_dict(raw)


@pytest.mark.parametrize(("raw", "key"), [
    ({"loss": {"det_weight": -1.0}}, "loss.det_weight"),
    ({"preprocess": {"test_logs": 0}}, "preprocess.test_logs"),
    ({"data": {"synthetic": {"scenes_per_log": 4}}}, "data.synthetic.scenes_per_log"),
    ({"carla_eval": {"carla": {"port": 70000}}}, "carla_eval.carla.port"),
])
def test_out_of_range_values_are_rejected_by_name(raw, key):
    with pytest.raises(ConfigError, match=f"^{key}: .* out of range"):
        from_dict(raw)


def test_literal_choices_and_cross_field_checks():
    with pytest.raises(ConfigError, match=r"^train.amp: 'fp8' is not one of"):
        from_dict({"train": {"amp": "fp8"}})
    with pytest.raises(ConfigError, match="model.depth_max_m"):
        from_dict({"model": {"depth_min_m": 10.0, "depth_max_m": 5.0}})
    with pytest.raises(ConfigError, match="preprocess.cameras"):
        from_dict({"preprocess": {"cameras": ["CAM_X9"]}})
    with pytest.raises(ConfigError, match="model.use_camera"):
        from_dict({"model": {"use_camera": False, "use_lidar": False}})


def test_int_is_accepted_for_float_and_config_is_frozen():
    cfg = from_dict({"loss": {"det_weight": 2}})
    assert cfg.loss.det_weight == 2.0 and isinstance(cfg.loss.det_weight, float)
    with pytest.raises(AttributeError):
        cfg.loss.det_weight = 3.0  # type: ignore[misc]


def test_config_hash_tracks_values():
    a, b = Config(), from_dict({"preprocess": {"bev_size": 64}})
    assert config_hash(a.preprocess) == config_hash(Config().preprocess)
    assert config_hash(a.preprocess) != config_hash(b.preprocess)


def test_missing_params_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)
