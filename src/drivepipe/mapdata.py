"""In-memory vector map of one nuPlan location, shared by the GeoPackage reader/writer, the synthetic world,
the renderer, preprocessing and the closed-loop simulator.

Layers carry the GeoPackage layer names of nuPlan maps (`lanes_polygons`, `lane_connectors`, `baseline_paths`,
`boundaries`, `intersections`, `crosswalks`, `walkways`, `road_segments`, `generic_drivable_areas`,
`carpark_areas`, `stop_polygons`, `lane_groups_polygons`, `lane_group_connectors`,
`gen_lane_connectors_scaled_width_polygons`, `traffic_lights`, `dubins_nodes`). Geometries are shapely objects in
the location's UTM frame (metres); `props` holds the layer's attribute columns by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from drivepipe.utils import detmath

# Semantic BEV classes -> the gpkg layers they are made of.
SEMANTIC_LAYERS: dict[str, tuple[str, ...]] = {
    "drivable_area": ("road_segments", "intersections", "generic_drivable_areas", "carpark_areas"),
    "lane": ("lanes_polygons", "gen_lane_connectors_scaled_width_polygons"),
    "lane_divider": ("boundaries",),
    "crosswalk": ("crosswalks",),
    "walkway": ("walkways",),
    "stop_line": ("stop_polygons",),
    "intersection": ("intersections",),
    "centerline": ("baseline_paths",),
}

# `boundaries.boundary_type_fid` values that are not painted lines (3 = unknown: the synthetic map's lane-connector
# edges through intersections); they are not lane dividers
VIRTUAL_BOUNDARY_TYPES = frozenset({3})


@dataclass
class MapFeature:
    fid: int
    geometry: BaseGeometry
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class VectorMap:
    """All vector layers of one location. `epsg` is the UTM CRS of the geometries."""

    location: str
    version: str
    epsg: int
    layers: dict[str, list[MapFeature]]
    _trees: dict[str, STRtree] = field(default_factory=dict, repr=False, compare=False)
    _arrays: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def layer(self, name: str) -> list[MapFeature]:
        return self.layers.get(name, [])

    def query(self, name: str, box_xyxy: tuple[float, float, float, float]) -> list[MapFeature]:
        """Features of a layer whose geometry intersects an axis-aligned box (global frame)."""
        feats = self.layer(name)
        if not feats:
            return []
        if name not in self._trees:
            self._trees[name] = STRtree([f.geometry for f in feats])
        idx = self._trees[name].query(shapely.box(*box_xyxy), predicate="intersects")
        return [feats[i] for i in sorted(idx)]

    def semantic_layers_in_ego(self, T_global_from_ego: np.ndarray, radius_m: float,
                               classes: tuple[str, ...] = tuple(SEMANTIC_LAYERS)) -> dict[str, list[BaseGeometry]]:
        """Semantic classes near the ego, transformed into the ego frame (x forward, y left; 2-D) and clipped to a
        square of half-side `radius_m` around the rear axle (`shapely.clip_by_rect`: fast; a clipped polygon covers
        the exact area but may touch itself along the square's edge, which rasterising does not mind)."""
        x, y = float(T_global_from_ego[0, 3]), float(T_global_from_ego[1, 3])
        yaw = float(detmath.arctan2(T_global_from_ego[1, 0], T_global_from_ego[0, 0]))
        r = radius_m * 1.5  # a rotated square needs a larger axis-aligned query box
        window = (x - r, y - r, x + r, y + r)
        clip_xyxy = (-radius_m, -radius_m, radius_m, radius_m)
        c, s = detmath.cos(yaw), detmath.sin(yaw)
        rotation = np.array([[c, -s], [s, c]])  # ego = (p - t) @ R(yaw), i.e. R(-yaw) @ (p - t)
        origin = np.array([x, y])
        geoms, class_of, tree = self._semantic_index(tuple(classes))
        hit = np.sort(tree.query(shapely.box(*window), predicate="intersects")) if len(geoms) else np.zeros(0, int)
        # one vectorised transform and clip for every class
        local = shapely.clip_by_rect(shapely.transform(geoms[hit], lambda p: detmath.rotate(p - origin, rotation.T)), *clip_xyxy)
        keep = ~shapely.is_empty(local)
        return {cls: list(local[keep & (class_of[hit] == k)]) for k, cls in enumerate(classes)}

    def _semantic_index(self, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, STRtree]:
        """(geometries of all the classes' layers, class index of each, one STRtree over them), built once per
        tuple of classes; geometries are in class, then layer, then feature order."""
        key = ("semantic", *classes)
        if key not in self._arrays:
            parts = [(self._geometries(layer, painted=cls == "lane_divider"), k) for k, cls in enumerate(classes)
                     for layer in SEMANTIC_LAYERS[cls]]
            geoms = np.concatenate([g for g, _ in parts]) if parts else np.zeros(0, object)
            class_of = np.concatenate([np.full(len(g), k) for g, k in parts]) if parts else np.zeros(0, int)
            self._arrays[key] = (geoms, class_of, STRtree(geoms))
        return self._arrays[key]

    def _geometries(self, name: str, painted: bool = False) -> np.ndarray:
        """The layer's geometries as a numpy object array (built once), for shapely's vectorised functions;
        `painted` leaves out the `VIRTUAL_BOUNDARY_TYPES` boundaries (lines that are not painted on the road)."""
        key = ("geometries", name, painted)
        if key not in self._arrays:
            feats = [f for f in self.layer(name)
                     if not painted or f.props.get("boundary_type_fid") not in VIRTUAL_BOUNDARY_TYPES]
            self._arrays[key] = np.empty(len(feats), dtype=object)
            self._arrays[key][:] = [f.geometry for f in feats]
        return self._arrays[key]
