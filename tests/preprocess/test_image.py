"""Undistortion + resize: intrinsics of the output image and straightening of lines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bundle_factory import camera_calibration
from drivepipe.preprocess.image import undistort_maps, undistort_resize

W, H = 640, 384


def _distorted_projection(cal, pts_cam_N3: np.ndarray) -> np.ndarray:
    uv, _ = cv2.projectPoints(pts_cam_N3.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cal.intrinsic, cal.distortion)
    return uv.reshape(-1, 2)


def _centroid(img_HW: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(img_HW > 20)
    w = img_HW[v, u].astype(float)
    return np.array([(u * w).sum() / w.sum(), (v * w).sum() / w.sum()])


@pytest.mark.parametrize("out_wh", [(320, 192), (160, 96)])  # 2x (remap only) and 4x (area pre-resize + remap)
def test_intrinsics_after_resize(out_wh):
    cal = camera_calibration("CAM_F0", W, H)
    p_cam = np.array([[3.5, 1.8, 6.0]])  # off-centre so distortion matters
    uv_d = _distorted_projection(cal, p_cam)[0]
    yy, xx = np.mgrid[0:H, 0:W]
    blob = 255 * np.exp(-((xx - uv_d[0]) ** 2 + (yy - uv_d[1]) ** 2) / (2 * 4.0 ** 2))
    img = np.repeat(blob[..., None], 3, axis=2).astype(np.uint8)
    out, K = undistort_resize(img, cal, *out_wh)
    assert out.shape == (3, out_wh[1], out_wh[0]) and out.dtype == np.uint8 and K.dtype == np.float32
    s = out_wh[0] / W
    assert np.isclose(K[0, 0], cal.intrinsic[0, 0] * s) and np.isclose(K[1, 1], cal.intrinsic[1, 1] * s)
    uv_new = (K.astype(float) @ p_cam[0])[:2] / p_cam[0, 2]
    uv_ideal = (cal.intrinsic @ p_cam[0])[:2] / p_cam[0, 2]
    assert np.allclose(uv_new, (uv_ideal + 0.5) * s - 0.5, atol=1e-3)  # = scaled undistorted projection
    assert np.linalg.norm(_centroid(out[0]) - uv_new) < 0.35
    assert np.linalg.norm(uv_d - uv_ideal) * s > 2.0  # the distortion was significant


def _line_residual(img_HW: np.ndarray) -> float:
    """Max distance (px) of the bright pixels' per-column centroids from their least-squares line."""
    cols = np.nonzero(img_HW.max(axis=0) > 60)[0]
    rows = np.array([(np.arange(img_HW.shape[0]) * img_HW[:, c]).sum() / img_HW[:, c].sum() for c in cols])
    a, b = np.polyfit(cols, rows, 1)
    return float(np.abs(rows - (a * cols + b)).max() / np.hypot(a, 1.0))


def test_undistortion_straightens_a_line():
    cal = camera_calibration("CAM_F0", W, H)
    xs = np.linspace(-7.0, 7.0, 400)
    line = np.stack([xs, np.full_like(xs, 2.2), np.full_like(xs, 6.0)], axis=1)  # straight 3-D line below centre
    uv = _distorted_projection(cal, line)
    canvas = np.zeros((H, W), np.uint8)
    cv2.polylines(canvas, [np.round(uv * 16).astype(np.int32)], False, 255, thickness=2, lineType=cv2.LINE_AA,
                  shift=4)
    assert _line_residual(canvas) > 2.0  # curved before
    out, _ = undistort_resize(np.repeat(canvas[..., None], 3, axis=2), cal, W, H)
    assert _line_residual(out[0]) < 1.0


def test_remap_cached_per_calibration():
    cal = camera_calibration("CAM_F0", W, H)
    a = undistort_maps(cal, (160, 96))
    assert undistort_maps(camera_calibration("CAM_F0", W, H), (160, 96)) is a
    assert undistort_maps(cal, (80, 48)) is not a


@pytest.mark.parametrize("downscale, out_wh", [(2, (288, 160)), (4, (152, 88)), (2, (120, 64))])
def test_reduced_jpeg_decode_keeps_the_geometry(tmp_path, downscale, out_wh):
    """A blob written into a real JPEG, decoded at 1/downscale by the reader (DCT scaling) and undistorted: it lands
    where the returned intrinsics project its 3-D point, as with a full-size decode. (120, 64) from 1/2 also takes
    the area pre-resize."""
    from drivepipe.nuplan.bundle import read_jpeg

    cal = camera_calibration("CAM_F0", W, H)
    p_cam = np.array([-2.9, 1.4, 5.5])
    uv_d = _distorted_projection(cal, p_cam[None])[0]
    yy, xx = np.mgrid[0:H, 0:W]
    blob = (255 * np.exp(-((xx - uv_d[0]) ** 2 + (yy - uv_d[1]) ** 2) / (2 * 6.0 ** 2))).astype(np.uint8)
    path = tmp_path / "cam.jpg"
    cv2.imwrite(str(path), np.repeat(blob[..., None], 3, axis=2), [cv2.IMWRITE_JPEG_QUALITY, 98])
    small = read_jpeg(path, downscale)
    assert small.shape == (H // downscale, W // downscale, 3)
    out, K = undistort_resize(small, cal, *out_wh, downscale=downscale)
    full_out, full_K = undistort_resize(read_jpeg(path), cal, *out_wh)
    assert np.array_equal(K, full_K)  # the output camera does not depend on how the JPEG was decoded
    uv = (K.astype(float) @ p_cam)[:2] / p_cam[2]
    assert np.linalg.norm(_centroid(out[0]) - uv) < 0.35
    assert np.linalg.norm(_centroid(out[0]) - _centroid(full_out[0])) < 0.35
    with pytest.raises(ValueError, match="expected"):  # a full-size image passed as reduced is refused
        undistort_resize(read_jpeg(path), cal, *out_wh, downscale=downscale)


def test_jpeg_downscale_never_goes_below_the_output_size():
    from drivepipe.nuplan.bundle import jpeg_downscale

    assert jpeg_downscale((1920, 1080), (640, 384)) == 2  # 960x540 >= 640x384, 480x270 would be too small
    assert jpeg_downscale((1920, 1080), (240, 135)) == 8
    assert jpeg_downscale((480, 270), (128, 72)) == 2
    assert jpeg_downscale((480, 270), (480, 270)) == 1
    assert jpeg_downscale((480, 270), (640, 384)) == 1  # upsampling: decode everything
    assert jpeg_downscale((481, 271), (121, 68)) == 4  # ceil: 121x68 is exactly enough
