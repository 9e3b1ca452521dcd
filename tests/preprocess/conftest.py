"""Fixtures of the preprocess tests; the hand-built bundles come from `bundle_factory.py`."""

from __future__ import annotations

import pytest

from bundle_factory import make_bundle
from drivepipe.schema import SensorBundle


@pytest.fixture
def bundle() -> SensorBundle:
    return make_bundle()
