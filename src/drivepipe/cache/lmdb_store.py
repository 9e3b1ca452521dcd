"""The LMDB sample cache: a self-describing header, compact pickle-free values, atomic writes, lazy reads.

Layout: one LMDB environment directory holding only `data.mdb` (written with `lock=False`). Keys are
`<log_name>/<token>` (utf-8); the reserved key `__meta__` holds the JSON header (see `preprocess.run.build_header`).

Value format (`SAMPLE_FORMAT_VERSION`): b"DPS2" + uint32 little-endian length L + L bytes of compact sorted-key
JSON {"meta": {...}, "arrays": [{"name", "dtype", "shape", "enc", "sizes"}, ...]} + the array payloads in order
+ a uint32 little-endian CRC-32 of everything before it, checked on every read (a flipped or cut value names its
key instead of decoding to garbage). `LmdbReader.verify()` recomputes the header's `content_hash` in full.
Encodings: "raw" (C-order bytes; int64 arrays whose values fit are stored as int32, "store" names the
stored dtype), "bits" (np.packbits of 0/1 arrays: seg, occ, masks), "jpeg" (images: one JPEG
per camera, `sizes` gives their byte lengths). No pickle anywhere, no timestamps: equal inputs give equal bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.config import Config, config_hash, to_dict
from drivepipe.errors import DataError, DiskFullError, is_disk_full
from drivepipe.sample import FIELDS, Sample
from drivepipe.schema import SCHEMA_VERSION

SAMPLE_FORMAT_VERSION = 2  # 2: CRC-32 trailer per value
META_KEY = b"__meta__"
MAGIC = b"DPS2"
MAP_SIZE = 1 << 40  # 1 TiB of address space; the file only grows as pages are used
COMMIT_EVERY = 32  # records per write transaction (fixed, so the file bytes do not depend on how work was split)
REPRO_HINT = "run: dvc repro preprocess"
# preprocess fields that do not change the stored samples: how the cache is built (run-only knobs) and the model's
# lift-splat geometry; they are left out of the header's config and its hash, so changing them never stales a cache
NOT_IN_CACHE_FIELDS = ("workers", "shard_index", "shard_count", "failure_policy", "max_skipped_fraction",
                       "depth_min_m", "depth_max_m", "num_depth_bins", "feature_downsample")
_BIT_FIELDS = {"seg", "occ", "agent_hist_valid", "agent_fut_valid", "ego_hist_valid", "ego_fut_valid", "route_valid"}


def cache_preprocess_dict(cfg: Config) -> dict[str, Any]:
    """The preprocess section as stored in the header: everything that shapes the samples (NOT_IN_CACHE_FIELDS
    dropped)."""
    d = to_dict(cfg.preprocess)
    return {k: v for k, v in d.items() if k not in NOT_IN_CACHE_FIELDS}


def cache_config_hash(cfg: Config) -> str:
    """sha256 of (preprocess without NOT_IN_CACHE_FIELDS, data): what the header's `config_hash` must equal."""
    return config_hash(cache_preprocess_dict(cfg), cfg.data)


# ------------------------------------------------------------------------------------------------------ values
def _encode_array(name: str, arr: np.ndarray, image_storage: str, jpeg_quality: int) -> tuple[dict, list[bytes]]:
    import cv2

    entry: dict[str, Any] = {"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if name == "images" and image_storage == "jpeg":
        parts = []
        for img in arr:  # (3, H, W) RGB planes -> (H, W, 3) BGR for the encoder (cv2.merge: one SIMD pass)
            ok, buf = cv2.imencode(".jpg", cv2.merge([img[2], img[1], img[0]]),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:
                raise ValueError(f"JPEG encoding of {name} failed")
            parts.append(buf.tobytes())
        entry.update(enc="jpeg", sizes=[len(p) for p in parts])
        return entry, parts
    if name in _BIT_FIELDS:
        data = np.packbits(np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)).tobytes()
        entry.update(enc="bits", sizes=[len(data)])
        return entry, [data]
    if arr.dtype == np.int64 and arr.size and -(2**31) <= arr.min() and arr.max() < 2**31:
        arr = arr.astype(np.int32)  # indices and labels: half the bytes (pillar_index is ~1/4 of a sample)
        entry["store"] = arr.dtype.str
    data = np.ascontiguousarray(arr).tobytes()
    entry.update(enc="raw", sizes=[len(data)])
    return entry, [data]


def encode_sample(sample: Sample, meta: dict[str, Any], image_storage: str = "jpeg", jpeg_quality: int = 95) -> bytes:
    """Serialise a Sample (every `sample.FIELDS` entry) plus a JSON-able meta dict into one value."""
    entries, payload = [], []
    for name in FIELDS:
        entry, parts = _encode_array(name, np.asarray(sample[name]), image_storage, jpeg_quality)
        entries.append(entry)
        payload.extend(parts)
    head = json.dumps({"meta": meta, "arrays": entries}, sort_keys=True, separators=(",", ":")).encode()
    body = b"".join([MAGIC, struct.pack("<I", len(head)), head, *payload])
    return body + struct.pack("<I", zlib.crc32(body))


def _checked_view(value: bytes) -> memoryview:
    """The value without its CRC trailer, after checking magic and CRC (ValueError says what is wrong)."""
    view = memoryview(value)
    if bytes(view[:4]) != MAGIC:
        raise ValueError("not a drivepipe sample value of this format (bad magic)")
    if len(view) < 12 or struct.unpack("<I", view[-4:])[0] != zlib.crc32(view[:-4]):
        raise ValueError(f"checksum mismatch ({len(view)} bytes): the stored value is corrupted")
    return view[:-4]


def _decode_array(entry: dict[str, Any], buf: memoryview) -> np.ndarray:
    import cv2

    dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
    if entry["enc"] == "jpeg":
        out, off = np.empty(shape, dtype), 0  # (N, 3, H, W) RGB
        for i, size in enumerate(entry["sizes"]):
            bgr = cv2.imdecode(np.frombuffer(buf[off:off + size], np.uint8), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != (shape[2], shape[3], 3):
                raise ValueError(f"JPEG {i} of {entry['name']} does not decode to {shape[3]}x{shape[2]}")
            cv2.split(bgr, [out[i, 2], out[i, 1], out[i, 0]])  # planes written in place, B G R -> R G B
            off += size
        return out
    if entry["enc"] == "bits":
        n = int(np.prod(shape))
        return np.unpackbits(np.frombuffer(buf, np.uint8), count=n).reshape(shape).astype(dtype)
    stored = np.frombuffer(buf, np.dtype(entry.get("store", entry["dtype"]))).reshape(shape)
    return stored.astype(dtype)  # always a fresh, writable array


def decode_sample(value: bytes) -> tuple[Sample, dict[str, Any]]:
    """Inverse of `encode_sample`: (Sample with fresh writable arrays, meta dict); ValueError on a corrupt value."""
    view = _checked_view(value)
    (n,) = struct.unpack("<I", view[4:8])
    head = json.loads(bytes(view[8:8 + n]))
    off, sample = 8 + n, {}
    for entry in head["arrays"]:
        size = sum(entry["sizes"])
        sample[entry["name"]] = _decode_array(entry, view[off:off + size])
        off += size
    return sample, head["meta"]


def decode_meta(value: bytes) -> dict[str, Any]:
    """Only the meta dict of a stored value (no array decoding)."""
    view = _checked_view(value)
    (n,) = struct.unpack("<I", view[4:8])
    return json.loads(bytes(view[8:8 + n]))["meta"]


# ------------------------------------------------------------------------------------------------------ writer
class LmdbWriter:
    """Writes a cache into `<out_dir>.tmp/` and renames it to `out_dir` on `finish` (old `out_dir` replaced).

    Use as a context manager: an exception inside the block deletes the tmp dir; a killed process leaves at most the
    tmp dir, which the next writer removes. Keys must arrive in strictly increasing order; they are committed every
    `COMMIT_EVERY` records, so the same key/value sequence always gives a byte-identical data.mdb, however the
    producer grouped its work (worker count, shards).
    """

    def __init__(self, out_dir: str | Path, map_size: int = MAP_SIZE, expected_records: int = 0) -> None:
        import lmdb

        self.out_dir = Path(out_dir)
        self.tmp_dir = self.out_dir.with_name(self.out_dir.name + ".tmp")
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self._env = lmdb.open(str(self.tmp_dir), map_size=map_size, subdir=True, lock=False, sync=False,
                              metasync=False, readahead=False, meminit=True, max_dbs=0)
        self._last_key: bytes | None = None
        self._pending: list[tuple[bytes, bytes]] = []
        self._content = hashlib.sha256()  # over every (key, value): the header then changes whenever a sample does
        self.count = 0
        self.nbytes = 0
        self.expected_records = expected_records  # only for the "need ~N MB" estimate of a full disk

    def put(self, key: str, value: bytes) -> None:
        """Queue one record; written in the next commit (every COMMIT_EVERY records and at `finish`)."""
        k = key.encode()
        if k == META_KEY or (self._last_key is not None and k <= self._last_key):
            raise ValueError(f"cache keys must be written in increasing order: {key!r}")
        self._last_key = k
        self._content.update(struct.pack("<II", len(k), len(value)) + k)
        self._content.update(value)
        self._pending.append((k, value))
        self.count += 1
        self.nbytes += len(k) + len(value)
        if len(self._pending) >= COMMIT_EVERY:
            self._commit()

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """`put` each (key, value) pair in order."""
        for key, value in items:
            self.put(key, value)

    def _commit(self) -> None:
        if not self._pending:
            return
        with self._disk_full_as_error():
            with self._env.begin(write=True) as txn:
                for k, v in self._pending:
                    txn.put(k, v, append=True)
        self._pending = []

    @contextlib.contextmanager
    def _disk_full_as_error(self) -> Iterator[None]:
        """LMDB reports a full disk as `mdb_txn_commit: Input/output error`; say what it is and what is needed."""
        import lmdb

        try:
            yield
        except (lmdb.Error, OSError) as exc:
            if not is_disk_full(exc, self.tmp_dir):
                raise
            per_record = self.nbytes / max(self.count, 1)
            need = int(per_record * max(self.expected_records, self.count) * 1.1)  # + B-tree pages
            raise DiskFullError(self.tmp_dir, need) from None

    def finish(self, header: dict[str, Any]) -> Path:
        """Write the pending records and the `__meta__` header, flush, close and move the cache into place."""
        self._commit()
        header = {**header, "content_hash": self._content.hexdigest()}
        blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        with self._disk_full_as_error():
            with self._env.begin(write=True) as txn:
                txn.put(META_KEY, blob)
            self._env.sync(True)
        self._env.close()
        (self.tmp_dir / "lock.mdb").unlink(missing_ok=True)
        old = self.out_dir.with_name(self.out_dir.name + ".old")
        if self.out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out_dir, old)
        os.replace(self.tmp_dir, self.out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return self.out_dir

    def abort(self) -> None:
        """Close and delete the tmp dir (nothing is left behind)."""
        try:
            self._env.close()
        finally:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "LmdbWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.tmp_dir.exists():
            self.abort()


# ------------------------------------------------------------------------------------------------------ reader
# py-lmdb refuses to open one environment twice in a process, and a forked child inherits that bookkeeping: a child
# cannot open an environment its parent held open at fork time. So environments are shared per process (keyed by
# the data file's identity) and closed right before any fork; they reopen lazily on the next access.
_ENVS: dict[tuple[str, int], Any] = {}
_ENVS_PID: list[int] = []
_FORK_HOOK: list[bool] = []


def close_shared_envs() -> None:
    """Close every reader environment of this process (registered to run before `os.fork`)."""
    if _ENVS_PID and _ENVS_PID[0] == os.getpid():
        for env in _ENVS.values():
            env.close()
    _ENVS.clear()


def _shared_env(path: Path) -> Any:
    """The read-only, lock-free environment of a cache directory for this process."""
    import lmdb

    data = path / "data.mdb"
    if not data.is_file():
        raise DataError(path, f"no cache found (no data.mdb); {REPRO_HINT}")
    if not _ENVS_PID or _ENVS_PID[0] != os.getpid():
        _ENVS.clear()  # inherited from a parent: never touch (the parent closes them before forking anyway)
        _ENVS_PID[:] = [os.getpid()]
    if not _FORK_HOOK:
        os.register_at_fork(before=close_shared_envs)
        _FORK_HOOK.append(True)
    key = (str(path.resolve()), data.stat().st_ino)
    env = _ENVS.get(key)
    if env is None:
        for stale in [k for k in _ENVS if k[0] == key[0]]:  # the cache was rebuilt at the same path
            _ENVS.pop(stale).close()
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=8)
        except lmdb.Error as exc:
            raise DataError(data, f"not a readable LMDB cache ({exc}); {REPRO_HINT}") from None
        _check_file_size(env, data)
        _ENVS[key] = env
    return env


def _check_file_size(env: Any, data: Path) -> None:
    """A data.mdb shorter than its last used page would kill the reader with SIGBUS on first touch; refuse it."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = data.stat().st_size
    if have < need:
        env.close()
        raise DataError(data, f"truncated: {have} bytes, but the LMDB environment uses {need}; {REPRO_HINT}")


class LmdbReader:
    """Read-only access to a cache; the environment is opened lazily in each process (never in `__init__`),
    shared by all readers of the same cache in that process, and closed before a fork.

    Args:
        path: the cache directory (contains data.mdb).
        expected: the current config; when given, the header's schema version, sample format version and config hash
            must match it, else `DataError` ("... run: dvc repro preprocess").
    """

    def __init__(self, path: str | Path, expected: Config | None = None) -> None:
        self.path = Path(path)
        self._expected_hash = cache_config_hash(expected) if expected is not None else None
        self._header: dict[str, Any] | None = None
        self._index: dict[str, int] | None = None

    @property
    def header(self) -> dict[str, Any]:
        """The `__meta__` JSON, read once and checked against the config."""
        if self._header is None:
            with _shared_env(self.path).begin() as txn:
                raw = txn.get(META_KEY)
            if raw is None:
                raise DataError(self.path, f"cache has no {META_KEY.decode()} header; {REPRO_HINT}")
            header = json.loads(raw)
            self._check(header)
            self._header = header
        return self._header

    def _check(self, header: dict[str, Any]) -> None:
        problems = []
        if header.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"schema_version {header.get('schema_version')} != code's {SCHEMA_VERSION}")
        if header.get("sample_format_version") != SAMPLE_FORMAT_VERSION:
            problems.append(f"sample_format_version {header.get('sample_format_version')} != {SAMPLE_FORMAT_VERSION}")
        if self._expected_hash is not None and header.get("config_hash") != self._expected_hash:
            problems.append("preprocess/data params changed since the cache was built "
                            f"(cache {str(header.get('config_hash'))[:12]}, params {self._expected_hash[:12]})")
        if problems:
            raise DataError(self.path, "stale cache: " + "; ".join(problems) + f"; {REPRO_HINT}")

    def keys(self, split: str | None = None) -> list[str]:
        """All sample keys (sorted), or those of one split ("train" / "val")."""
        h = self.header
        if split is None:
            return list(h["keys"])
        if split not in h["splits"]:
            raise DataError(self.path, f"unknown split {split!r} (have {sorted(h['splits'])})")
        return [h["keys"][i] for i in h["splits"][split]]

    def key_index(self, key: str) -> int:
        """Position of a key in `header["keys"]` (for the per-sample header lists such as point_counts)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.header["keys"])}
        return self._index[key]

    def get_raw(self, key: str) -> bytes:
        """The stored value bytes of one key."""
        with _shared_env(self.path).begin(buffers=False) as txn:
            value = txn.get(key.encode())
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str) -> tuple[Sample, dict[str, Any]]:
        """(Sample, meta) of one key; meta has log, token, timestamp_us, location, scenario_type, split.
        A corrupt value raises DataError naming the key."""
        try:
            return decode_sample(self.get_raw(key))
        except ValueError as exc:
            raise DataError(f"{self.path}:{key}", f"{exc}; {REPRO_HINT}") from None

    def verify(self) -> int:
        """Full check on request: every value's CRC and the header's `content_hash` over all (key, value) pairs.
        Returns the number of values checked; raises DataError naming the first bad key."""
        content, count = hashlib.sha256(), 0
        with _shared_env(self.path).begin(buffers=False) as txn:
            for k, value in txn.cursor():
                if k == META_KEY:
                    continue
                try:
                    _checked_view(value)
                except ValueError as exc:
                    raise DataError(f"{self.path}:{k.decode()}", f"{exc}; {REPRO_HINT}") from None
                content.update(struct.pack("<II", len(k), len(value)) + k)
                content.update(value)
                count += 1
        if content.hexdigest() != self.header.get("content_hash"):
            raise DataError(self.path, f"content hash does not match the header (keys added, removed or changed); "
                            f"{REPRO_HINT}")
        return count

    def __len__(self) -> int:
        return int(self.header["count"])

    def close(self) -> None:
        """Close this process's environments (all readers; they reopen lazily)."""
        close_shared_envs()
