"""`verify-data` on a clean and on a damaged dataset, through the library and through the CLI dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivepipe.cli.main import main
from drivepipe.nuplan.db import NuplanLog
from drivepipe.nuplan.verify import verify_dataset


import reader_data as _D  # noqa: E402  (tests/nuplan is on sys.path under pytest)

CHANNELS = _D.CHANNELS
LOCATION = _D.LOCATION
NUM_SCENES = _D.NUM_SCENES
SWEEPS_PER_SCENE = _D.SWEEPS_PER_SCENE
Dataset = _D.Dataset

NUM_SWEEPS = NUM_SCENES * SWEEPS_PER_SCENE


def run_cli(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["verify-data", "--root", str(root), *extra])
    return code, capsys.readouterr().out


def test_clean_dataset_counts(dataset: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(dataset.root, capsys, "--json")
    report = json.loads(out)
    assert code == 0 and report["problems"] == []
    assert (report["logs"], report["scenes"], report["lidar_sweeps"]) == (1, NUM_SCENES, NUM_SWEEPS)
    assert report["images"] == {c: NUM_SWEEPS // 2 for c in sorted(CHANNELS)}
    assert report["boxes"] == {"vehicle": NUM_SWEEPS, "pedestrian": NUM_SWEEPS, "traffic_cone": 10}
    assert report["duration_s"] == pytest.approx((NUM_SWEEPS - 1) * 0.05)
    assert report["locations"] == [LOCATION]


def test_damaged_dataset_lists_problems(dataset_copy: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    blobs = dataset_copy.blobs
    jpg = sorted(blobs.rglob("CAM_F0/*.jpg"))[3]
    pcd = sorted(blobs.rglob("MergedPointCloud/*.pcd"))[5]
    jpg.unlink()
    pcd.write_bytes(pcd.read_bytes()[:-64])
    code, out = run_cli(dataset_copy.root, capsys, "--json")
    problems = {p["file"]: p["problem"] for p in json.loads(out)["problems"]}
    assert code == 1
    assert set(problems) == {str(jpg), str(pcd)}
    assert problems[str(jpg)] == "missing blob referenced by image.filename_jpg"
    assert "truncated" in problems[str(pcd)]


def test_bad_db_and_missing_map_are_problems(dataset_copy: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    bad = dataset_copy.db.with_name("2021.01.01.00.00.00_veh-01_00000_00010.db")
    bad.write_bytes(b"garbage" * 100)
    gpkg = next(dataset_copy.maps.rglob(f"{LOCATION}/*/map.gpkg"))
    gpkg.unlink()
    report = verify_dataset(dataset_copy.root)
    files = [p["file"] for p in report["problems"]]
    assert files == [str(bad), str(gpkg)] and report["logs"] == 1
    code, out = run_cli(dataset_copy.root, capsys)  # human-readable summary
    assert code == 1 and "2 problem(s)" in out and "not a SQLite database" in out


def test_many_problems_are_summarised(dataset_copy: Dataset) -> None:
    for p in sorted(dataset_copy.blobs.rglob("MergedPointCloud/*.pcd")):
        p.unlink()
    report = verify_dataset(dataset_copy.root, max_listed=3)
    # a missing cloud is a problem at a sweep with a camera frame; at the others it is unreleased (lidar_release)
    with NuplanLog(dataset_copy.db, dataset_copy.blobs, None) as log:
        at_cameras = int(log.camera_sweeps().sum())
    assert 0 < at_cameras < NUM_SWEEPS and report["lidar_unreleased"] == NUM_SWEEPS - at_cameras
    assert len(report["problems"]) == 4 and report["num_problems"] == at_cameras
    assert report["problems"][-1]["problem"].startswith(f"{at_cameras - 3} more problem(s)")


def test_no_dataset_is_a_problem_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(tmp_path, capsys, "--json")
    report = json.loads(out)
    assert code == 1 and "no nuPlan log databases" in report["problems"][0]["problem"]


@pytest.mark.slow
def test_generated_dataset_reads_back(request: pytest.FixtureRequest) -> None:
    """The synthetic generator's output passes verify-data and its scenarios become valid bundles."""
    for module in ("drivepipe.world.generate", "drivepipe.world.world", "drivepipe.world.render_lidar"):
        pytest.importorskip(module)  # the generator is built by another engineer in parallel
    synthetic_root: Path = request.getfixturevalue("synthetic_root")
    from drivepipe.nuplan.bundle import load_bundle
    from drivepipe.nuplan.layout import discover
    from drivepipe.nuplan.maps import MapsRoot
    from drivepipe.nuplan.scenarios import enumerate_scenarios

    report = verify_dataset(synthetic_root)
    assert report["problems"] == [] and report["logs"] == 3  # the session world (tests/conftest.py)
    layout = discover(synthetic_root)
    maps = MapsRoot(layout.maps_root)
    with NuplanLog(layout.db_files[0], layout.sensor_root, maps) as log:
        scenarios = enumerate_scenarios(log)
        assert scenarios
        for s in scenarios[:: max(1, len(scenarios) // 4)]:
            b = load_bundle(log, s.token, ["CAM_F0", "CAM_B0"], 4, 6, 0.5, 32.0)
            b.validate()
            assert b.lidar.points.shape[0] > 0 and b.annotations.route.shape[1] == 2
