"""dvc.yaml `params:` lists are generated from the config's field metadata (`config.dvc_params`).

Each stage lists exactly the keys whose value changes its outputs, so a speed or logging knob (worker counts,
prefetch, logging cadence) reruns nothing. After changing a field's `stages=`/`identity=` or adding a field, run
`python tests/test_dvc_params.py` to rewrite the lists in dvc.yaml, and review the diff.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from drivepipe.config import RUN_ONLY, STAGES, dvc_params, is_identity, key_stages, leaf_fields  # noqa: E402


def _declared(stage: str) -> list[str]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("params", [])


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_params_match_the_config_metadata(stage: str) -> None:
    expected = dvc_params(stage)
    block = "\n".join(f"      - {k}" for k in expected)
    assert _declared(stage) == expected, (f"dvc.yaml stage {stage}: params differ from config metadata; run "
                                          f"`python tests/test_dvc_params.py` or paste:\n    params:\n{block}")


def test_speed_knobs_are_tracked_by_no_stage() -> None:
    run_only = {k for k, f in leaf_fields() if key_stages(k, f) == RUN_ONLY}
    assert {"preprocess.workers", "data.synthetic.workers", "train.workers", "train.prefetch_factor",
            "train.log_every_steps", "train.pin_memory", "train.persistent_workers"} <= run_only
    for stage in STAGES:
        listed = dvc_params(stage)
        assert not [k for k in run_only if any(k == p or k.startswith(p + ".") for p in listed)], stage


def test_every_output_key_is_tracked_and_hashes_skip_non_identity_keys() -> None:
    listed = {p for s in STAGES for p in dvc_params(s)}
    for key, f in leaf_fields():
        covered = any(key == p or key.startswith(p + ".") for p in listed)
        assert covered == bool(key_stages(key, f)), key
    assert not is_identity("train.experiment", dict(leaf_fields())["train.experiment"])
    assert is_identity("model.num_depth_bins", dict(leaf_fields())["model.num_depth_bins"])


def test_depth_and_feature_knobs_belong_to_the_model() -> None:
    keys = dict(leaf_fields())
    for name in ("depth_min_m", "depth_max_m", "num_depth_bins", "feature_downsample"):
        assert f"model.{name}" in keys and f"preprocess.{name}" not in keys
    assert "model.num_depth_bins" not in dvc_params("preprocess")


def rewrite(path: Path) -> None:
    """Replace each stage's `params:` block in dvc.yaml by the generated list (comments elsewhere are kept)."""
    text = path.read_text()
    for stage in STAGES:
        head = re.search(rf"^  {stage}:\n", text, re.M)
        block = re.compile(r"^    params:\n(?:      - .*\n)+", re.M).search(text, head.end())
        new = "    params:\n" + "".join(f"      - {k}\n" for k in dvc_params(stage))
        text = text[: block.start()] + new + text[block.end():]
    path.write_text(text)


if __name__ == "__main__":
    rewrite(REPO / "dvc.yaml")
