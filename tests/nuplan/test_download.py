"""The download path against a real HTTP server on 127.0.0.1: resume after a cut, corrupt and unsafe archives."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from drivepipe.config import NuplanSourceConfig, RemoteFile
from drivepipe.errors import DataError
from drivepipe.nuplan.download import download, fetch_nuplan, normalise_layout, safe_extract, write_manifest


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    cut_first: set[str]
    requests: list[tuple[str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves in-memory files with Range support; cuts the first transfer of names in `cut_first` midway."""

    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        name = self.path.lstrip("/")
        data = self.server.files.get(name)
        rng = self.headers.get("Range")
        self.server.requests.append((name, rng))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.server.cut_first:
            self.server.cut_first.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the transfer is cut midway
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.cut_first, srv.requests = {}, set(), []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _zip_of(folder: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return buf.getvalue()


def _url(server: _Server, name: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"


def test_cut_transfer_resumes_and_verifies(server, tmp_path, synthetic_root):
    blob = _zip_of(synthetic_root / "maps", "maps")
    server.files["maps.zip"] = blob
    server.cut_first.add("maps.zip")
    remote = RemoteFile(url=_url(server, "maps.zip"), sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    path = download(remote, tmp_path / "dl", timeout_s=5.0, retries=2)
    assert path.read_bytes() == blob
    ranges = [r for n, r in server.requests if n == "maps.zip"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(blob) // 2}-"  # resumed where the cut happened
    assert not (tmp_path / "dl" / "maps.zip.part").exists()


def test_checksum_mismatch_is_refused_and_kept_aside(server, tmp_path):
    server.files["bad.zip"] = b"not what was promised"
    remote = RemoteFile(url=_url(server, "bad.zip"), sha256="0" * 64)
    with pytest.raises(DataError, match="sha256"):
        download(remote, tmp_path, timeout_s=5.0, retries=0)
    assert (tmp_path / "bad.zip.corrupt").exists() and not (tmp_path / "bad.zip").exists()


def test_corrupt_zip_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("data/cache/mini/a.db", b"x" * 1000)
    raw = bytearray(buf.getvalue())
    raw[100] ^= 0xFF  # flip a byte inside the stored member -> CRC error
    archive = tmp_path / "mini.zip"
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt archive"):
        safe_extract(archive, tmp_path / "out")


def test_member_escaping_target_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("maps/ok.txt", b"fine")
        zf.writestr("../escaped.txt", b"boom")
    with pytest.raises(DataError, match="outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "maps" / "ok.txt").exists()  # nothing extracted when any member is unsafe


def test_archive_layout_is_normalised_over_http(server, tmp_path, synthetic_root):
    """Zips laid out like the real archives (data/cache/mini/*.db, maps/, sensor folders) end up documented."""
    dbs = synthetic_root / "nuplan-v1.1" / "splits" / "mini"
    server.files["db.zip"] = _zip_of(dbs, "data/cache/mini")
    server.files["maps.zip"] = _zip_of(synthetic_root / "maps", "maps")
    server.files["cams.zip"] = _zip_of(synthetic_root / "nuplan-v1.1" / "sensor_blobs", "nuplan-v1.1_mini_camera_0")
    cfg = NuplanSourceConfig(urls=[RemoteFile(url=_url(server, n)) for n in ("db.zip", "maps.zip", "cams.zip")],
                             download_dir=str(tmp_path / "dl"))
    root = tmp_path / "root"
    counts = fetch_nuplan(cfg, root)
    assert counts["dbs"] == len(list(dbs.glob("*.db"))) and counts["maps"] == 1
    for db in dbs.glob("*.db"):
        assert (root / "nuplan-v1.1/splits/mini" / db.name).read_bytes() == db.read_bytes()
        assert (root / "nuplan-v1.1/sensor_blobs" / db.stem / "CAM_F0").is_dir()
    assert (root / "maps" / "nuplan-maps-v1.0.json").is_file()
    from drivepipe.nuplan.verify import verify_dataset

    assert verify_dataset(root)["problems"] == []


def test_manifest_is_stable_and_complete(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"123")
    (tmp_path / "y.txt").write_bytes(b"hello")
    m1 = write_manifest(tmp_path)
    m2 = write_manifest(tmp_path)
    assert m1 == m2 and m1["num_files"] == 2 and m1["total_bytes"] == 8
    assert m1["files"][0] == {"path": "a/x.bin", "size": 3, "sha256": hashlib.sha256(b"123").hexdigest()}


def test_no_source_given_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no urls, archives or folders"):
        fetch_nuplan(NuplanSourceConfig(), tmp_path)


def test_normalise_merges_split_sensor_archives(tmp_path):
    for part, cam in (("p0", "CAM_F0"), ("p1", "MergedPointCloud")):
        d = tmp_path / part / "some_prefix" / "2021.01.01.00.00.00_veh-01_00000_00010" / cam
        d.mkdir(parents=True)
        (d / "0000000000000001.bin").write_bytes(b"z")
        normalise_layout(tmp_path / part, tmp_path / "root")
        shutil.rmtree(tmp_path / part)
    log_dir = tmp_path / "root/nuplan-v1.1/sensor_blobs/2021.01.01.00.00.00_veh-01_00000_00010"
    assert sorted(p.name for p in log_dir.iterdir()) == ["CAM_F0", "MergedPointCloud"]
