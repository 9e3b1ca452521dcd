"""Fault cases 1 and 9 of issue 16: params that YAML accepts but that would poison or silently change a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _faults import error_line

from drivepipe.cli.main import main
from drivepipe.config import ConfigError, load

REPO = Path(__file__).resolve().parents[2]


def _params_with(tmp_path: Path, text_edit) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text_edit((REPO / "params.yaml").read_text()))
    return path


def _replace_key(section: str, key: str, value: str):
    def edit(text: str) -> str:
        lines, in_section = text.splitlines(), False
        for i, line in enumerate(lines):
            if not line.startswith(" "):
                in_section = line.startswith(f"{section}:")
            elif in_section and line.strip().startswith(f"{key}:"):
                lines[i] = line[: line.index(key)] + f"{key}: {value}"
                return "\n".join(lines) + "\n"
        raise AssertionError(f"{section}.{key} not in params.yaml")
    return edit


@pytest.mark.parametrize(("section", "key", "value"), [
    ("preprocess", "lidar_z_min_m", ".nan"),   # silently removed every lidar point
    ("train", "lr", ".inf"),                   # exported a model with all-NaN weights
    ("loss", "det_weight", ".inf"),            # skipped every step, exported an untrained model
    ("train", "lr", "-.inf"),
])
def test_non_finite_params_are_rejected_by_every_stage(tmp_path: Path, capsys, section: str, key: str,
                                                       value: str) -> None:
    params = _params_with(tmp_path, _replace_key(section, key, value))
    out = tmp_path / "out"
    for stage in (["preprocess", "--out", out / "cache"], ["train", "--checkpoints", out / "ck"],
                  ["evaluate", "--out", out / "ev"]):
        rc = main([stage[0], "--params", str(params), *map(str, stage[1:])])
        line = error_line(capsys.readouterr().err)
        assert rc == 2 and f"{section}.{key}" in line and "not a finite number" in line, line
    assert not out.exists(), "a rejected config must not write anything"


def test_duplicate_key_is_rejected_with_its_line(tmp_path: Path, capsys) -> None:
    params = _params_with(tmp_path, lambda t: t.replace("train:\n", "train:\n  lr: 0.5\n", 1))
    with pytest.raises(ConfigError, match=r"lr: duplicate key \(line \d+\)"):
        load(params)
    assert main(["train", "--params", str(params), "--checkpoints", str(tmp_path / "ck")]) == 2
    assert "duplicate key" in error_line(capsys.readouterr().err)
    nested = _params_with(tmp_path, lambda t: t + "train:\n  lr: 0.5\n")  # a whole section twice
    with pytest.raises(ConfigError, match="train: duplicate key"):
        load(nested)


@pytest.mark.parametrize("text", ["", "# all commented out\n", "[]\n"])
def test_empty_params_file_is_rejected(tmp_path: Path, capsys, text: str) -> None:
    (tmp_path / "params.yaml").write_text(text)
    assert main(["preprocess", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "c")]) == 2
    assert "empty or not a mapping" in error_line(capsys.readouterr().err)


def test_missing_section_is_rejected_naming_it(tmp_path: Path, capsys) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["loss"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["train", "--params", str(tmp_path / "params.yaml"), "--checkpoints", str(tmp_path / "ck")]) == 2
    line = error_line(capsys.readouterr().err)
    assert "loss: section missing or empty" in line and not (tmp_path / "ck").exists()


def test_params_rewritten_by_dvc_set_param_still_load(tmp_path: Path) -> None:
    """`dvc exp run -S key=value` rewrites params.yaml with DVC's own YAML writer: the strict loader must accept
    what it writes (same code path: dvc.utils.serialize.modify_yaml)."""
    from dvc.utils.serialize import modify_yaml

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    with modify_yaml(path) as data:
        data["train"]["lr"] = 0.0005
        data["loss"]["det_weight"] = 2
    cfg = load(path)
    assert cfg.train.lr == 0.0005 and cfg.loss.det_weight == 2.0
