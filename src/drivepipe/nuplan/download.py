"""Getting real nuPlan-mini onto disk: resumable HTTP(S) downloads, size + sha256 checks, safe extraction and
normalisation of whatever the archives unpack to into the documented layout, plus the dataset manifest.

Documented layout written under the dataset root (the devkit's documented tree):
    maps/nuplan-maps-v1.0.json, maps/<location>/<version>/map.gpkg
    nuplan-v1.1/splits/mini/<log>.db
    nuplan-v1.1/sensor_blobs/<log>/{CAM_*,MergedPointCloud}/...
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from drivepipe.config import NuplanSourceConfig, RemoteFile
from drivepipe.errors import DataError, DiskFullError
from drivepipe.utils.io import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SENSOR_DIRS = ("CAM_F0", "CAM_B0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2", "MergedPointCloud")


# ------------------------------------------------------------------------------------------------------ download
def download(remote: RemoteFile, dest_dir: Path, timeout_s: float, retries: int) -> Path:
    """Fetch one URL into dest_dir, resuming a `.part` file with an HTTP Range request; verify size and sha256.

    Returns the finished file. A finished file that already verifies is not fetched again. A checksum mismatch
    raises DataError and keeps the bad file aside as `<name>.corrupt` (nothing is silently deleted).
    """
    name = PurePosixPath(urllib.request.urlparse(remote.url).path).name or "download"
    dest_dir.mkdir(parents=True, exist_ok=True)
    final, part = dest_dir / name, dest_dir / f"{name}.part"
    if final.exists() and _verifies(final, remote):
        if remote.sha256 or remote.size:
            log.info("%s: already downloaded and verified", final)
        else:
            log.info("%s: already downloaded, archive complete (not verified: no sha256/size configured)", final)
        return final
    for attempt in range(retries + 1):
        try:
            _fetch_resuming(remote.url, part, timeout_s)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if attempt == retries:
                raise DataError(remote.url, f"download failed after {retries + 1} attempts: {exc}") from exc
            log.warning("%s: transfer interrupted (%s); resuming (attempt %d)", remote.url, exc, attempt + 2)
            time.sleep(min(2.0**attempt, 10.0) * 0.1)
    _check(part, remote, final)
    problem = archive_problem(part)
    if problem:  # e.g. a transfer cut short by a server that sent no Content-Length: keep it to resume
        raise DataError(remote.url, f"{problem}; kept as {part}: rerun to resume, or delete it to start over")
    os.replace(part, final)
    return final


def archive_problem(path: Path) -> str:
    """"" when `path` is a complete zip (its central directory is readable) or tar (every member header up to the
    end of the stream reads); otherwise what is wrong. Read-only: a cheap check before a file is promoted."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                end = max((i.header_offset + i.compress_size for i in zf.infolist()), default=0)
        except (zipfile.BadZipFile, OSError) as exc:
            return f"incomplete or corrupt zip archive ({exc})"
        return "" if end <= path.stat().st_size else "incomplete zip archive (members end past the file)"
    if path.name.endswith((".zip", ".zip.part")):
        return "incomplete or corrupt zip archive (no central directory: the file was cut short)"
    try:
        with tarfile.open(path) as tf:
            tf.getmembers()  # walks every header to the end of the (decompressed) stream
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        return f"incomplete or corrupt archive (not a complete zip or tar: {exc})"
    return ""


def _fetch_resuming(url: str, part: Path, timeout_s: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (user-supplied link)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # range not satisfiable: the .part is already complete
            return
        raise
    with response:
        resumed = response.status == 206
        expected = response.headers.get("Content-Length")
        mode = "ab" if resumed else "wb"
        got = 0
        with open(part, mode) as f:
            while block := response.read(CHUNK):
                f.write(block)
                got += len(block)
        if expected is not None and got != int(expected):
            raise OSError(f"connection closed after {got} of {expected} bytes")


def _verifies(path: Path, remote: RemoteFile) -> bool:
    if remote.size and path.stat().st_size != remote.size:
        return False
    if remote.sha256:
        return sha256_file(path) == remote.sha256.lower()
    return not archive_problem(path)


def _check(path: Path, remote: RemoteFile, final: Path) -> None:
    size = path.stat().st_size
    problem = ""
    if remote.size and size != remote.size:
        problem = f"size {size} != expected {remote.size}"
    elif remote.sha256 and (digest := sha256_file(path)) != remote.sha256.lower():
        problem = f"sha256 {digest} != expected {remote.sha256.lower()}"
    if problem:
        bad = final.with_name(final.name + ".corrupt")
        os.replace(path, bad)
        raise DataError(remote.url, f"{problem}; kept as {bad} (delete it to retry)")


# ------------------------------------------------------------------------------------------------------- extract
def safe_extract(archive: Path, dest: Path, max_bytes: float = 500e9, max_ratio: float = 50.0) -> None:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive, refusing any member that would land outside `dest`
    (absolute paths, `..`, links pointing outside), an expansion beyond `max_bytes` or `max_ratio` x the archive
    size (data.nuplan.max_extract_gb / max_extract_ratio), and more than the free disk space under `dest`.
    Nothing is extracted if any check fails."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _check_expansion(archive, dest, sum(i.file_size for i in zf.infolist()), max_bytes, max_ratio)
            bad = zf.testzip()
            if bad is not None:
                raise DataError(archive, f"corrupt archive: CRC error in member {bad!r}")
            for name in zf.namelist():
                _refuse_outside(archive, root, name)
            zf.extractall(dest)
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            _check_expansion(archive, dest, sum(m.size for m in members if m.isfile()), max_bytes, max_ratio)
            for m in members:
                _refuse_outside(archive, root, m.name)
                if m.issym() or m.islnk():
                    _refuse_outside(archive, root, str(PurePosixPath(m.name).parent / m.linkname))
                if m.isdev():
                    raise DataError(archive, f"refusing device member {m.name!r}")
            tf.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise DataError(archive, f"not a readable zip or tar archive ({exc})") from exc


def _check_expansion(archive: Path, dest: Path, expanded: int, max_bytes: float, max_ratio: float) -> None:
    size = max(archive.stat().st_size, 1)
    if expanded > max_bytes:
        raise DataError(archive, f"expands to {expanded / 1e9:.1f} GB, more than data.nuplan.max_extract_gb "
                        f"{max_bytes / 1e9:g}; refusing to extract (raise the limit if the archive is genuine)")
    if expanded / size > max_ratio:
        raise DataError(archive, f"expands {expanded / size:.0f}x ({size} -> {expanded} bytes), more than "
                        f"data.nuplan.max_extract_ratio {max_ratio:g}; refusing to extract (a zip bomb?)")
    if shutil.disk_usage(dest).free < expanded:
        raise DiskFullError(dest, expanded)


def _refuse_outside(archive: Path, root: Path, name: str) -> None:
    target = (root / name).resolve()
    if PurePosixPath(name).is_absolute() or not target.is_relative_to(root):
        raise DataError(archive, f"refusing member {name!r}: it would be written outside {root}")


# ----------------------------------------------------------------------------------------------------- normalise
def normalise_layout(src: Path, root: Path) -> dict[str, int]:
    """Move what an archive unpacked (`data/cache/mini/*.db`, `maps/`, `<log>/CAM_*`, ...) into the documented
    layout under `root`. Returns counts of moved dbs, sensor log folders and map roots."""
    counts = {"dbs": 0, "sensor_logs": 0, "maps": 0}
    db_dir = root / "nuplan-v1.1" / "splits" / "mini"
    blob_dir = root / "nuplan-v1.1" / "sensor_blobs"
    for db in sorted(src.rglob("*.db")):
        _move(db, db_dir / db.name)
        counts["dbs"] += 1
    for json_file in sorted(src.rglob("nuplan-maps-v*.json")):
        for item in sorted(json_file.parent.iterdir()):
            _move(item, root / "maps" / item.name)
        counts["maps"] += 1
    log_dirs = {p.parent for name in SENSOR_DIRS for p in src.rglob(name) if p.is_dir()}
    for log_dir in sorted(log_dirs):
        for sensor in sorted(log_dir.iterdir()):
            _move(sensor, blob_dir / log_dir.name / sensor.name)
        counts["sensor_logs"] += 1
    return counts


def _move(src: Path, dst: Path) -> None:
    """Move a file or merge a folder into dst (sensor archives are split across several zips)."""
    if src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _move(child, dst / child.name)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink() if dst.is_file() else shutil.rmtree(dst)
    shutil.move(str(src), str(dst))


def fetch_nuplan(src_cfg: NuplanSourceConfig, root: Path) -> dict[str, int]:
    """Bring the user's nuPlan-mini (links, archives, folders) into `root` in the documented layout."""
    if not (src_cfg.urls or src_cfg.archives or src_cfg.folders):
        raise DataError("params.yaml:data.nuplan", "data.source is 'nuplan' but no urls, archives or folders are "
                        "given (nuPlan needs a login: paste your own links or archive paths)")
    archives = [download(r, Path(src_cfg.download_dir), src_cfg.timeout_s, src_cfg.retries) for r in src_cfg.urls]
    archives += [Path(a) for a in src_cfg.archives]
    totals = {"dbs": 0, "sensor_logs": 0, "maps": 0}
    staging = root.parent / f".{root.name}.extract"
    for archive in archives:
        if not archive.is_file():
            raise DataError(archive, "archive not found")
        shutil.rmtree(staging, ignore_errors=True)
        safe_extract(archive, staging, src_cfg.max_extract_gb * 1e9, src_cfg.max_extract_ratio)
        _add(totals, normalise_layout(staging, root))
    shutil.rmtree(staging, ignore_errors=True)
    for folder in map(Path, src_cfg.folders):
        if not folder.is_dir():
            raise DataError(folder, "folder not found")
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        _add(totals, normalise_layout(staging, root))
        shutil.rmtree(staging, ignore_errors=True)
    return totals


def _add(totals: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        totals[k] += v


# ------------------------------------------------------------------------------------------------------ manifest
def write_manifest(root: Path) -> dict:
    """`<root>/manifest.json`: every file with its size and sha256, sorted by path; plus a hash over all of it."""
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files.append({"path": path.relative_to(root).as_posix(), "size": path.stat().st_size,
                      "sha256": sha256_file(path)})
    digest = hashlib.sha256("".join(f"{f['path']}\0{f['sha256']}\n" for f in files).encode()).hexdigest()
    manifest = {"files": files, "num_files": len(files), "total_bytes": sum(f["size"] for f in files),
                "dataset_hash": digest}
    atomic_write_json(root / "manifest.json", manifest)
    return manifest
