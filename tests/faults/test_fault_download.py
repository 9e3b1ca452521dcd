"""Fault cases 5 and 6 of issue 16: a download cut short by a server that sends no Content-Length (no checksum
configured), and archives that would expand without limit or beyond the free disk."""

from __future__ import annotations

import http.server
import io
import logging
import threading
import zipfile
from pathlib import Path

import pytest

from drivepipe.config import NuplanSourceConfig, RemoteFile
from drivepipe.errors import DataError, DiskFullError
from drivepipe.nuplan.download import download, fetch_nuplan, safe_extract


class _Server(http.server.ThreadingHTTPServer):
    body: bytes
    cut: bool
    requests: int


class _NoLengthHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 without Content-Length (the end of the body is the closed connection); no Range support;
    while `cut` is set it closes the connection halfway, which the client cannot tell from the end."""

    server: _Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests += 1
        self.send_response(200)
        self.end_headers()
        body = self.server.body
        self.wfile.write(body[: len(body) // 2] if self.server.cut else body)


@pytest.fixture()
def server():
    srv = _Server(("127.0.0.1", 0), _NoLengthHandler)
    srv.body, srv.cut, srv.requests = b"", True, 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_cut_download_without_length_or_checksum_is_not_promoted(server, tmp_path: Path, caplog) -> None:
    server.body = _zip({f"maps/file{i}.bin": bytes([i]) * 50_000 for i in range(8)})
    remote = RemoteFile(url=f"http://127.0.0.1:{server.server_address[1]}/maps.zip")
    with pytest.raises(DataError, match="incomplete or corrupt zip archive.*rerun to resume"):
        download(remote, tmp_path, timeout_s=5.0, retries=0)
    assert not (tmp_path / "maps.zip").exists() and (tmp_path / "maps.zip.part").exists()
    server.cut = False  # the rerun gets the whole file (this server ignores Range: the .part is rewritten)
    caplog.set_level(logging.INFO, logger="drivepipe.nuplan.download")
    path = download(remote, tmp_path, timeout_s=5.0, retries=0)
    assert path.read_bytes() == server.body and server.requests == 2
    download(remote, tmp_path, timeout_s=5.0, retries=0)  # already there: no request, and never "verified"
    assert server.requests == 2
    assert "not verified: no sha256/size configured" in caplog.text and "and verified" not in caplog.text


def test_cut_tar_is_refused(tmp_path: Path) -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = bytes(range(256)) * 4000
        info = tarfile.TarInfo("db/log.db")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    from drivepipe.nuplan.download import archive_problem

    good = tmp_path / "a.tar.gz"
    good.write_bytes(buf.getvalue())
    assert archive_problem(good) == ""
    good.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "incomplete or corrupt archive" in archive_problem(good)


def test_zip_bomb_is_refused_before_extracting(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip({"a.db": b"\0" * 64_000_000}, zipfile.ZIP_DEFLATED))  # ~62 KB -> 64 MB
    with pytest.raises(DataError, match=r"expands \d+x .* data.nuplan.max_extract_ratio 50"):
        safe_extract(bomb, tmp_path / "out")
    with pytest.raises(DataError, match="more than data.nuplan.max_extract_gb 0.01"):
        safe_extract(bomb, tmp_path / "out", max_bytes=0.01e9, max_ratio=1e6)
    assert not any((tmp_path / "out").iterdir()), "nothing may be extracted from a refused archive"
    src = NuplanSourceConfig(archives=[str(bomb)], max_extract_ratio=50.0)
    with pytest.raises(DataError, match="max_extract_ratio"):
        fetch_nuplan(src, tmp_path / "root")


def test_archive_larger_than_free_disk_is_refused(tmp_path: Path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    archive = tmp_path / "big.zip"
    archive.write_bytes(_zip({"a.db": b"x" * 3_000_000}))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**7, 9 * 10**6, 10**6))  # 1 MB free
    with pytest.raises(DiskFullError, match=r"no space left on .*out, need ~3 MB"):
        safe_extract(archive, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())
