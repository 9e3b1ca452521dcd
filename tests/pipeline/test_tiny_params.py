"""tiny_params.yaml must follow params.yaml: a key added there would otherwise never be exercised by tests/pipeline."""

from __future__ import annotations

from typing import Any

import yaml
from pipeline_repo import PROJECT, TINY_PARAMS


def _key_tree(node: Any) -> Any:
    return {k: _key_tree(v) for k, v in node.items()} if isinstance(node, dict) else None


def test_tiny_params_have_the_same_keys_as_the_project_params() -> None:
    project = yaml.safe_load((PROJECT / "params.yaml").read_text())
    tiny = yaml.safe_load(TINY_PARAMS.read_text())
    assert _key_tree(tiny) == _key_tree(project)


def test_tiny_params_validate() -> None:
    from drivepipe.config import load

    cfg = load(TINY_PARAMS)
    assert cfg.train.device == "cpu" and cfg.train.workers == 0
