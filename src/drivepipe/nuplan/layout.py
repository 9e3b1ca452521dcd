"""Find the parts of a nuPlan dataset on disk: log databases, sensor blobs and maps.

Accepted layouts under a dataset root (the devkit's documented tree, and what the archives unpack to):

* documented: ``nuplan-v1.1/splits/mini/*.db``, ``nuplan-v1.1/sensor_blobs/<log>/...``, ``maps/``;
* legacy (no ``splits/``): ``nuplan-v1.1/mini/*.db``;
* as the mini archive unpacks: ``data/cache/mini/*.db``;
* a root that is itself the db folder (users point ``NUPLAN_DATA_ROOT`` at ``.../data/cache/mini``).

The sensor zips' internal prefix is not confirmed, so when ``<log>/CAM_F0`` or ``<log>/MergedPointCloud`` is not
under the documented ``sensor_blobs`` folder the tree under the root is searched for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drivepipe.errors import DataError

MAPS_JSON = "nuplan-maps-v1.0.json"
SENSOR_MARKERS = ("CAM_F0", "MergedPointCloud")
# Relative db folders tried in order; the first that holds at least one *.db wins.
DB_FOLDERS = (
    Path("nuplan-v1.1/splits/mini"),
    Path("nuplan-v1.1/mini"),
    Path("data/cache/mini"),
    Path("splits/mini"),  # root = the nuplan-v1.1 folder
    Path("mini"),
    Path("."),  # root = the db folder itself
)
_MAX_SEARCH_DEPTH = 6  # folders below the root searched for sensor blobs / the maps json


@dataclass(frozen=True)
class DatasetLayout:
    """Where one dataset lives. db_files are sorted; sensor_root joins `lidar_pc.filename` / `image.filename_jpg`;
    maps_root holds `nuplan-maps-v1.0.json`."""

    db_files: list[Path]
    sensor_root: Path
    maps_root: Path

    @property
    def log_names(self) -> list[str]:
        """Log names (= db file stems), in db_files order."""
        return [p.stem for p in self.db_files]


def discover(root: Path | str | None = None) -> DatasetLayout:
    """Locate db files, sensor root and maps root of a nuPlan-format dataset.

    Args:
        root: dataset root. When None, `NUPLAN_DATA_ROOT` is used, and `NUPLAN_MAPS_ROOT` / `NUPLAN_SENSOR_ROOT`
            (if set) override the maps / sensor folders. An explicit root wins over all environment variables.

    Raises:
        DataError: no root given and `NUPLAN_DATA_ROOT` unset, or no `*.db` in any accepted folder (the message
            names the folders searched).
    """
    env_maps = env_sensors = None
    if root is None:
        env_root = os.environ.get("NUPLAN_DATA_ROOT")
        if not env_root:
            raise DataError("NUPLAN_DATA_ROOT", "no dataset root given and the environment variable is not set")
        root = env_root
        env_maps = os.environ.get("NUPLAN_MAPS_ROOT") or None
        env_sensors = os.environ.get("NUPLAN_SENSOR_ROOT") or None
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(root, "dataset root is not a folder")
    db_files = find_db_files(root)
    log_names = {p.stem for p in db_files}
    sensor_root = Path(env_sensors) if env_sensors else find_sensor_root(root, log_names)
    maps_root = Path(env_maps) if env_maps else find_maps_root(root)
    return DatasetLayout(db_files=db_files, sensor_root=sensor_root, maps_root=maps_root)


def find_db_files(root: Path) -> list[Path]:
    """Sorted `*.db` files of the first accepted db folder under `root` that holds any.

    Raises:
        DataError: none found; the message lists every folder searched.
    """
    searched = []
    for rel in DB_FOLDERS:
        folder = root / rel
        searched.append(str(folder))
        if folder.is_dir():
            files = sorted(p for p in folder.glob("*.db") if p.is_file())
            if files:
                return files
    raise DataError(root, f"no nuPlan log databases (*.db) found; searched: {', '.join(searched)}")


def find_sensor_root(root: Path, log_names: set[str]) -> Path:
    """The folder that holds `<log_name>/CAM_F0` or `<log_name>/MergedPointCloud` for one of the logs.

    Tries the documented `nuplan-v1.1/sensor_blobs` first, then searches the tree under `root` (bounded depth).
    Returns the documented folder when nothing is found (the reader then reports the blobs as missing).
    """
    documented = root / "nuplan-v1.1" / "sensor_blobs"
    if _holds_sensor_folders(documented, log_names):
        return documented
    for folder in _walk_dirs(root):
        if folder.name in log_names and any((folder / m).is_dir() for m in SENSOR_MARKERS):
            return folder.parent
    return documented


def find_maps_root(root: Path) -> Path:
    """The folder holding `nuplan-maps-v1.0.json`: `root/maps` if it has it, else the first one found below
    `root` (bounded depth), else `root/maps` (MapsRoot then reports the missing json)."""
    documented = root / "maps"
    if (documented / MAPS_JSON).is_file():
        return documented
    for folder in _walk_dirs(root):
        if (folder / MAPS_JSON).is_file():
            return folder
    return documented


def _holds_sensor_folders(folder: Path, log_names: set[str]) -> bool:
    return folder.is_dir() and any((folder / name / m).is_dir() for name in log_names for m in SENSOR_MARKERS)


def _walk_dirs(root: Path):
    """Breadth-first folders under root (root included), at most _MAX_SEARCH_DEPTH levels, sorted per level.
    Sensor folders (CAM_*, MergedPointCloud) are not descended into: they hold only files."""
    level = [root]
    for _ in range(_MAX_SEARCH_DEPTH + 1):
        nxt = []
        for folder in level:
            yield folder
            try:
                children = sorted(e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=True))
            except OSError:
                continue
            nxt.extend(Path(c) for c in children
                       if not (Path(c).name.startswith("CAM_") or Path(c).name in SENSOR_MARKERS))
        level = nxt
