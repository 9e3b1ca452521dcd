"""Fixtures of the reader tests; the data they are built from lives in `reader_data.py` (a uniquely named module
the test files import directly, so no test imports a conftest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reader_data import Dataset, write_dataset


@pytest.fixture(scope="session")
def _pristine(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("nuplan_reader") / "root")


@pytest.fixture(scope="session")
def dataset(_pristine: Dataset) -> Dataset:
    """The shared dataset; tests must not modify it (use `dataset_copy`)."""
    return _pristine


@pytest.fixture
def dataset_copy(_pristine: Dataset, tmp_path: Path) -> Dataset:
    """A private copy a test may damage."""
    root = tmp_path / "root"
    shutil.copytree(_pristine.root, root)
    return Dataset(root=root, db=root / _pristine.db.relative_to(_pristine.root),
                   blobs=root / "nuplan-v1.1" / "sensor_blobs", maps=root / "maps")
