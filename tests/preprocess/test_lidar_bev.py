"""Lidar filtering / pillar indexing and BEV rasters follow the sample.py grid convention."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon

from bundle_factory import small_preprocess
from drivepipe.preprocess.bev import rasterize_map, rasterize_occupancy, transform_boxes, transform_trajectory
from drivepipe.preprocess.lidar import pillar_grid_size, process_lidar
from drivepipe.sample import bev_cell_centers, ego_xy_to_cell
from drivepipe.utils.geometry import pose_to_transform


def _points(rows: list[list[float]]) -> np.ndarray:
    pts = np.zeros((len(rows), 6), np.float32)
    pts[:, :4] = np.asarray(rows, np.float32)
    return pts


def test_known_point_lands_in_right_cell_and_pillar():
    cfg = small_preprocess(bev_size=64, bev_resolution_m=0.5, pillar_size_m=0.25)  # E = 16 m, 128 pillars per side
    pts, pillar = process_lidar(_points([[10.1, -3.3, 0.5, 127.5]]), cfg)
    assert pillar_grid_size(cfg) == 128
    assert pillar.tolist() == [104 * 128 + 50]  # floor(26.1 / 0.25) = 104, floor(12.7 / 0.25) = 50
    assert ego_xy_to_cell(pts[:, :2], 64, 0.5).tolist() == [[52, 25]]
    centers = bev_cell_centers(64, 0.5)
    assert abs(centers[52] - 10.25) < 1e-9 and abs(centers[25] - (-3.25)) < 1e-9
    assert np.isclose(pts[0, 3], 0.5)


def test_filters_cap_and_order():
    cfg = small_preprocess(bev_size=64, bev_resolution_m=0.5, max_points=100, lidar_max_range_m=15.0)
    rows = [[1, 1, 0, 600],      # kept, intensity clipped to 1
            [15.5, 0, 0, 10],    # beyond 15 m range
            [1, 15.9, 0, 10],    # outside range (dist > 15)
            [2, 2, -1.5, 10],    # below z_min
            [2, 2, 4.5, 10],     # above z_max
            [-3, -4, 0, 0]]      # kept
    pts, pillar = process_lidar(_points(rows), cfg)
    assert len(pts) == 2 and pts[:, 3].max() == 1.0
    assert np.all(np.diff(pillar) >= 0)
    rng = np.random.default_rng(0)
    many = np.zeros((1000, 6), np.float32)
    many[:, :2] = rng.uniform(-14, 14, (1000, 2))
    pts, pillar = process_lidar(many, cfg)
    d_all = np.sort(np.hypot(many[:, 0], many[:, 1])[np.hypot(many[:, 0], many[:, 1]) <= 15.0])
    assert len(pts) == 100 and np.isclose(np.hypot(pts[:, 0], pts[:, 1]).max(), d_all[99])
    again, pillar2 = process_lidar(many, cfg)
    assert np.array_equal(pts, again) and np.array_equal(pillar, pillar2) and np.all(np.diff(pillar) >= 0)


def _cell(x: float, y: float, size: int = 64, res: float = 0.5) -> tuple[int, int]:
    i, j = ego_xy_to_cell(np.array([[x, y]]), size, res)[0]
    return int(i), int(j)


def test_map_raster_axis_order():
    layers = {"drivable_area": [Polygon([(5, -2), (10, -2), (10, -1), (5, -1)])],
              "lane_divider": [LineString([(-10, 6.0), (10, 6.0)])]}
    seg = rasterize_map(layers, ["drivable_area", "lane_divider", "lane"], 64, 0.5)
    assert seg.shape == (3, 64, 64) and seg.dtype == np.uint8
    assert seg[0][_cell(7.0, -1.5)] == 1 and seg[0][_cell(-1.5, 7.0)] == 0   # x forward on axis -2
    assert seg[0][_cell(7.0, 1.5)] == 0
    assert seg[1][_cell(0.0, 6.1)] == 1 and seg[1][_cell(6.1, 0.0)] == 0
    assert seg[1].sum(axis=1).max() <= 1 + 1  # ~0.3 m wide -> one cell across at 0.5 m
    assert seg[2].sum() == 0


def test_box_10m_ahead_rotated_90_deg():
    # box at (0, -10) in a frame rotated by -90 deg w.r.t. the ego: T_ego_from_src rotates by +90 deg
    T_ego_from_src = pose_to_transform(0, 0, 0, np.pi / 2)
    box_src = np.array([[0.0, -10.0, 0.8, 4.0, 2.0, 1.5, 0.0, 3.0, 0.0]])
    box = transform_boxes(box_src, T_ego_from_src)
    assert np.allclose(box[0, :3], [10.0, 0.0, 0.8]) and np.isclose(box[0, 6], np.pi / 2)
    assert np.allclose(box[0, 7:9], [0.0, 3.0])
    occ = rasterize_occupancy(np.array([[box[0, 0], box[0, 1], box[0, 6]]]), box[:, 3:5], np.zeros((1, 0, 3)),
                              np.zeros((1, 0), bool), 0, 64, 0.5)[0]
    assert occ[_cell(10.0, 0.0)] == 1 and occ[_cell(10.0, 1.7)] == 1 and occ[_cell(10.0, -1.7)] == 1
    assert occ[_cell(11.8, 0.0)] == 0 and occ[_cell(10.0, 2.4)] == 0
    traj = transform_trajectory(np.array([[0.0, -10.0, 0.0], [1.0, -10.0, 3.0]]), T_ego_from_src)
    assert np.allclose(traj[:, :2], [[10.0, 0.0], [10.0, 1.0]])
    assert np.allclose(traj[:, 2], [np.pi / 2, 3.0 + np.pi / 2 - 2 * np.pi])


def test_occupancy_future_channels():
    now = np.array([[0.0, 5.0, 0.0]])
    fut = np.array([[[4.0, 5.0, 0.0], [8.0, 5.0, 0.0]]])
    occ = rasterize_occupancy(now, np.array([[2.0, 1.0]]), fut, np.array([[True, False]]), 2, 64, 0.5)
    assert occ[0][_cell(0.0, 5.0)] == 1 and occ[1][_cell(4.0, 5.0)] == 1 and occ[1][_cell(0.0, 5.0)] == 0
    assert occ[2].sum() == 0  # invalid future step


def test_polygon_holes_do_not_erase_other_polygons():
    ring = Polygon([(-10, -10), (10, -10), (10, 10), (-10, 10)], [[(-5, -5), (5, -5), (5, 5), (-5, 5)]])
    inner = Polygon([(-2, -2), (2, -2), (2, 2), (-2, 2)])
    seg = rasterize_map({"drivable_area": [inner, ring]}, ["drivable_area"], 64, 0.5)[0]
    assert seg[_cell(0.0, 0.0)] == 1 and seg[_cell(3.5, 0.0)] == 0 and seg[_cell(8.0, 0.0)] == 1


def test_occupancy_is_exactly_the_cells_whose_centre_is_in_a_box():
    """The vectorised fill against a per-cell point-in-rectangle test (shapely), boxes of every size and angle,
    including boxes straddling the grid edge and boxes entirely off the grid."""
    from shapely import contains_xy
    from shapely.affinity import rotate

    rng = np.random.default_rng(3)
    size, res = 40, 0.5
    centers = bev_cell_centers(size, res)
    cx, cy = np.meshgrid(centers, centers, indexing="ij")  # axis -2 = x, axis -1 = y
    now = np.column_stack([rng.uniform(-14, 14, 30), rng.uniform(-14, 14, 30), rng.uniform(-np.pi, np.pi, 30)])
    now[:3, :2] = [[10.2, 0.0], [-2.0, -10.1], [30.0, 30.0]]  # two across the edge, one far off the grid
    dims = np.column_stack([rng.uniform(0.3, 12.0, 30), rng.uniform(0.3, 3.0, 30)])
    occ = rasterize_occupancy(now, dims, np.zeros((30, 0, 3)), np.zeros((30, 0), bool), 0, size, res)[0]
    expected = np.zeros((size, size), bool)
    for (x, y, yaw), (length, width) in zip(now, dims):
        rect = Polygon([(-length / 2, -width / 2), (length / 2, -width / 2), (length / 2, width / 2),
                        (-length / 2, width / 2)])
        footprint = rotate(rect, yaw, origin=(0, 0), use_radians=True)
        expected |= contains_xy(footprint, cx - x, cy - y)
    assert occ.sum() > 100 and occ[_cell(9.9, 0.0, size)] == 1
    # shapely's contains excludes the boundary, the fill includes it: cells exactly on an edge are measure-zero
    assert np.array_equal(occ.astype(bool), expected)


@pytest.mark.parametrize("bev_size", [64, 160])  # 128^2 pillars (16-bit radix sort) and 320^2 (int64 key sort)
def test_lidar_cap_ties_and_order_match_a_plain_stable_sort(bev_size):
    """The partition + single-sort path equals the definition: the max_points nearest (stable sort by distance, so
    input order on exact ties), then ordered by pillar with input order inside a pillar."""
    cfg = small_preprocess(bev_size=bev_size, bev_resolution_m=0.5, max_points=300, lidar_max_range_m=15.0,
                           intensity_max=1e6)
    rng = np.random.default_rng(1)
    many = np.zeros((2000, 6), np.float32)
    many[:, :2] = np.round(rng.uniform(-15, 15, (2000, 2)), 1)  # a 0.1 m lattice: many exact distance ties
    many[:, 3] = np.arange(2000)  # intensity carries the input index
    pts, pillar = process_lidar(many, cfg)
    d = np.hypot(many[:, 0].astype(float), many[:, 1].astype(float))
    extent = bev_size * 0.5 / 2
    ok = np.flatnonzero((d <= 15.0) & (np.abs(many[:, 0]) < extent) & (np.abs(many[:, 1]) < extent))
    keep = np.sort(ok[np.argsort(d[ok], kind="stable")][:300])
    n = pillar_grid_size(cfg)
    ij = np.clip(np.floor((many[keep, :2].astype(float) + extent) / 0.25).astype(int), 0, n - 1)
    ref_pillar = ij[:, 0] * n + ij[:, 1]
    order = np.argsort(ref_pillar, kind="stable")
    assert np.array_equal(pillar, ref_pillar[order])
    assert np.array_equal(np.round(pts[:, 3] * 1e6).astype(int), keep[order])
