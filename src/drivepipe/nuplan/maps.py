"""The nuPlan maps root: `nuplan-maps-v1.0.json` plus one `<location>/<version>/map.gpkg` per city.

Like the devkit, the version folder is never hard-coded: it is read from the json (`<location>.version`). Maps are
loaded on first use and cached per location (a city map is tens of MB of geometry in real data).
"""

from __future__ import annotations

import json
from pathlib import Path

from drivepipe.errors import DataError
from drivepipe.mapdata import VectorMap

DEFAULT_MAP_VERSION = "nuplan-maps-v1.0"  # = the json file stem (NUPLAN_MAP_VERSION)


class MapsRoot:
    """Read access to a maps folder.

    Args:
        maps_root: folder holding `<map_version>.json` and the city folders.
        map_version: json file stem, `nuplan-maps-v1.0` for every released devkit config.

    Raises:
        DataError: the json is missing, not valid JSON, or not a mapping of location -> {"version": ...}.
    """

    def __init__(self, maps_root: Path | str, map_version: str = DEFAULT_MAP_VERSION) -> None:
        self.root = Path(maps_root)
        self.json_path = self.root / f"{map_version}.json"
        self._index = self._read_index()
        self._cache: dict[str, VectorMap] = {}

    def _read_index(self) -> dict[str, str]:
        if not self.json_path.is_file():
            raise DataError(self.json_path, "maps index not found (is the maps root right?)")
        try:
            raw = json.loads(self.json_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(self.json_path, f"maps index is not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise DataError(self.json_path, "maps index must be a JSON object keyed by location")
        index = {}
        for location, entry in raw.items():
            version = entry.get("version") if isinstance(entry, dict) else None
            if not isinstance(version, str) or not version:
                raise DataError(self.json_path, f"location {location!r} has no 'version' string")
            index[location] = version
        return index

    @property
    def locations(self) -> list[str]:
        """Locations listed in the json, sorted."""
        return sorted(self._index)

    def version(self, location: str) -> str:
        """Map version folder name of a location (e.g. '9.15.1915').

        Raises:
            DataError: the location is not in the json (the message names the json file).
        """
        if location not in self._index:
            raise DataError(self.json_path, f"map location {location!r} is not listed (known: {self.locations})")
        return self._index[location]

    def gpkg_path(self, location: str) -> Path:
        """`<maps_root>/<location>/<version>/map.gpkg` (may not exist)."""
        return self.root / location / self.version(location) / "map.gpkg"

    def load(self, location: str) -> VectorMap:
        """The location's vector map in its UTM frame, read once and cached.

        Raises:
            DataError: location not in the json, gpkg missing, or gpkg unreadable (the message names the file).
        """
        if location not in self._cache:
            from drivepipe.nuplan.gpkg import read_gpkg

            path = self.gpkg_path(location)
            if not path.is_file():
                raise DataError(path, f"map file for location {location!r} not found")
            self._cache[location] = read_gpkg(path, location, self.version(location))
        return self._cache[location]
