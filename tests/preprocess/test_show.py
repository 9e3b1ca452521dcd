"""show-sample draws one cached sample: a PNG with the cameras (projected boxes and lane rasters) and BEV panels."""

from __future__ import annotations

import numpy as np
import pytest

from drivepipe.cli.main import main


@pytest.mark.slow
def test_show_sample_writes_a_picture(tiny_trained, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "sample.png"
    assert main(["show-sample", "--cache", str(tiny_trained["cache"]), "--index", "0",
                 "--out", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 10  # not a blank canvas
