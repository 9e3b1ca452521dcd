"""Procedural city map of the synthetic world: a signalised street grid as a nuPlan-style `VectorMap` plus the
directed lane graph that traffic and the ego drive on.

Geometry is built directly in the location's UTM frame (metres). Streets run along the x (east) and y (north) axes
between grid intersections; every street has the same number of lanes per direction (1 or 2, drawn per city).
Singapore drives on the left, the US cities on the right. Lane graph "edges" are lanes and lane connectors; an edge
is a densely sampled centreline with successors, so an agent's position is just (edge index, arc length s).

Distances measured from an intersection centre along one of its arms (road axes): the intersection box ends at `a`,
the crosswalk covers [a + 0.5, a + 4.0], the traffic-light stop line [a + 4.0, a + 5.0]; lanes end at the box edge,
so a vehicle stops with its front bumper `STOP_SETBACK_M` before its lane's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from drivepipe.mapdata import MapFeature, VectorMap
from drivepipe.utils import detmath

LANE_WIDTH_M = 3.5
CORNER_MARGIN_M = 4.0      # intersection box half-extent beyond the road edge (turn radius room)
KERB_RADIUS_M = 3.0        # kerb corner radius where a road meets the intersection box (turning vehicles' corners)
STOP_SETBACK_M = 5.0       # m between the stop point of the front bumper and the lane end (box edge)
WALKWAY_WIDTH_M = 3.5
TURN_LAT_ACCEL = 2.5       # m/s^2, lateral acceleration that sets curve speeds
ARM_DIRS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # arm ids 0 E, 1 N, 2 W, 3 S
TURN_TYPE_FID = {"straight": 0, "left": 1, "right": 2}  # our convention for lane_connectors.turn_type_fid

# location -> (map version, UTM EPSG, nominal UTM origin (m), probability of 2 lanes per direction, left-hand traffic)
LOCATION_INFO: dict[str, tuple[str, int, tuple[float, float], float, bool]] = {
    "us-nv-las-vegas-strip": ("9.15.1915", 32611, (664000.0, 3997000.0), 0.8, False),
    "us-ma-boston": ("9.12.1817", 32619, (330000.0, 4690000.0), 0.3, False),
    "us-pa-pittsburgh-hazelwood": ("9.17.1937", 32617, (585000.0, 4477000.0), 0.4, False),
    "sg-one-north": ("9.17.1964", 32648, (365000.0, 143000.0), 0.6, True),
}


@dataclass
class Intersection:
    """A signalised grid intersection: centre (2,) UTM m, box half-extent (m), arm ids that carry a road."""

    index: int
    fid: int
    center: np.ndarray
    half_extent: float
    arms: tuple[int, ...]
    polygon: BaseGeometry | None = None  # box plus connector footprints, the `intersections` layer geometry


@dataclass
class PedPath:
    """A straight pedestrian path (crosswalk or walkway centreline), endpoints (2,) in UTM m. Crosswalks know the
    intersection index and approach arm whose light protects them (-1 for walkways)."""

    fid: int
    start: np.ndarray
    end: np.ndarray
    intersection: int = -1
    arm: int = -1


@dataclass
class LaneGraph:
    """Directed lanes + lane connectors ("edges"), concatenated for vectorised lookups.

    Per edge e: `fid` (lanes_polygons.lane_fid or lane_connectors fid), `group_fid` (roadblock fid), `length` (m),
    `offset` (start of its samples in the concatenated arc length `cum`), `successors`, `intersection`/`arm` (for
    a lane: the intersection it leads into and its approach arm; for a connector: its own), `turn`, `speed_limit` and
    `curve_speed` (m/s), `outer` (lane next to the road edge). `pts` (P, 2) UTM m, `cum` (P,) m and `heading` (P,) rad are the concatenated samples.
    """

    fid: np.ndarray
    group_fid: np.ndarray
    is_connector: np.ndarray
    length: np.ndarray
    offset: np.ndarray
    intersection: np.ndarray
    arm: np.ndarray
    speed_limit: np.ndarray
    curve_speed: np.ndarray
    outer: np.ndarray
    turn: list[str]
    successors: list[list[int]]
    pts: np.ndarray
    cum: np.ndarray
    heading: np.ndarray
    index_of_fid: dict[int, int] = field(default_factory=dict)

    def pose_at(self, edge: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centreline (x, y, heading) at arc length s (m, clipped to the edge) on each edge; all (N,)."""
        edge = np.asarray(edge, dtype=np.int64)
        g = self.offset[edge] + np.clip(s, 0.0, self.length[edge])
        return (np.interp(g, self.cum, self.pts[:, 0]), np.interp(g, self.cum, self.pts[:, 1]),
                np.interp(g, self.cum, self.heading))

    def polyline(self, e: int) -> np.ndarray:
        """(K, 2) centreline samples of one edge."""
        lo = int(np.searchsorted(self.cum, self.offset[e]))
        hi = int(np.searchsorted(self.cum, self.offset[e] + self.length[e] + 1e-6, side="right"))
        return self.pts[lo:hi]


@dataclass
class City:
    """One synthetic location: map version/CRS, the vector map, the lane graph and pedestrian paths."""

    location: str
    version: str
    epsg: int
    origin: tuple[float, float]
    vector_map: VectorMap
    graph: LaneGraph
    intersections: list[Intersection]
    crosswalk_paths: list[PedPath]
    walkway_paths: list[PedPath]
    lanes_per_direction: int
    left_hand: bool


def _sample(p0: np.ndarray, p1: np.ndarray, step: float = 2.0) -> np.ndarray:
    """(K, 2) points from p0 to p1 at most `step` m apart."""
    n = max(2, int(np.ceil(detmath.norm(p1 - p0) / step)) + 1)
    return p0 + np.linspace(0.0, 1.0, n)[:, None] * (p1 - p0)


def _bezier_turn(p0: np.ndarray, h0: np.ndarray, p3: np.ndarray, h3: np.ndarray, n: int = 81) -> np.ndarray:
    """Cubic Bezier from p0 (heading h0) to p3 (heading h3) approximating a circular 90 degree arc; dense (n
    samples, ~0.25-0.4 m apart) so that motion along the polyline has a smoothly turning velocity."""
    if abs(h0[0] * h3[1] - h0[1] * h3[0]) < 1e-6:
        return _sample(p0, p3)
    # tangent lines intersect at x: p0 + t h0 = p3 - u h3
    d, det = p3 - p0, h0[0] * h3[1] - h3[0] * h0[1]  # Cramer's rule on [h0 h3] (t, u) = d
    t, u = (d[0] * h3[1] - h3[0] * d[1]) / det, (h0[0] * d[1] - d[0] * h0[1]) / det
    p1, p2 = p0 + 0.552 * t * h0, p3 - 0.552 * u * h3
    tt = np.linspace(0.0, 1.0, n)[:, None]
    st = 1 - tt
    return st * st * st * p0 + 3 * (st * st) * tt * p1 + 3 * st * (tt * tt) * p2 + tt * tt * tt * p3


def _rect(p0: np.ndarray, p1: np.ndarray, nrm: np.ndarray, lat_lo: float, lat_hi: float) -> Polygon:
    """Rectangle from p0 to p1 spanning lateral offsets [lat_lo, lat_hi] along unit normal nrm."""
    return Polygon([p0 + nrm * lat_lo, p1 + nrm * lat_lo, p1 + nrm * lat_hi, p0 + nrm * lat_hi])


def _turn_type(h_in: np.ndarray, h_out: np.ndarray) -> str:
    """'straight' | 'left' | 'right' from the unit travel directions into and out of an intersection."""
    cross = h_in[0] * h_out[1] - h_in[1] * h_out[0]
    return "left" if cross > 0.5 else "right" if cross < -0.5 else "straight"


class _MapBuilder:
    """Accumulates map features (fids unique across all layers) and lane-graph edges."""

    def __init__(self, rng: np.random.Generator, location: str) -> None:
        _, _, origin, p_two, left_hand = LOCATION_INFO[location]
        self.left_hand = left_hand
        self.side = 1.0 if left_hand else -1.0  # lanes sit on this side (along the left normal) of travel
        self.n = 2 if rng.random() < p_two else 1
        self.hw = self.n * LANE_WIDTH_M
        self.a = self.hw + CORNER_MARGIN_M
        self.speed_limit = float(rng.choice([11.2, 13.4]))
        ox = round(origin[0] + rng.uniform(-1500, 1500), 1)
        oy = round(origin[1] + rng.uniform(-1500, 1500), 1)
        self.origin = (ox, oy)
        nx, ny = int(rng.choice([3, 4])), 3
        self.xs = ox + np.concatenate([[0.0], np.cumsum(rng.uniform(60.0, 90.0, nx - 1))])
        self.ys = oy + np.concatenate([[0.0], np.cumsum(rng.uniform(60.0, 90.0, ny - 1))])
        self.layers: dict[str, list[MapFeature]] = {name: [] for name in (
            "lanes_polygons", "lane_connectors", "gen_lane_connectors_scaled_width_polygons", "lane_groups_polygons",
            "lane_group_connectors", "baseline_paths", "boundaries", "intersections", "crosswalks", "walkways",
            "road_segments", "generic_drivable_areas", "carpark_areas", "stop_polygons", "traffic_lights",
            "dubins_nodes")}
        self._next_fid = 1000
        self.edges: list[dict] = []
        self.incoming: dict[tuple[int, int], list[int]] = {}   # (intersection, arm) -> lane edge ids by inner index k
        self.outgoing: dict[tuple[int, int], list[int]] = {}
        self.group_in: dict[tuple[int, int], int] = {}         # (intersection, arm) -> incoming lane group fid
        self.group_out: dict[tuple[int, int], int] = {}
        self.intersections: list[Intersection] = []
        self.crosswalk_paths: list[PedPath] = []
        self.walkway_paths: list[PedPath] = []

    def add(self, layer: str, geom: BaseGeometry, **props) -> int:
        """Append a feature to `layer` under a new fid (unique across layers) and return that fid."""
        fid = self._next_fid
        self._next_fid += 1
        self.layers[layer].append(MapFeature(fid, geom, props))
        return fid

    # ------------------------------------------------------------------------------------------------ streets
    def build(self) -> None:
        """Intersections on the grid, the streets between neighbours, then each intersection's furniture."""
        nx, ny = len(self.xs), len(self.ys)
        idx = {(i, j): i * ny + j for i in range(nx) for j in range(ny)}
        for (i, j), k in sorted(idx.items(), key=lambda t: t[1]):
            arms = tuple(a for a, (di, dj) in enumerate(ARM_DIRS.astype(int)) if (i + di, j + dj) in idx)
            box = shapely.box(self.xs[i] - self.a, self.ys[j] - self.a, self.xs[i] + self.a, self.ys[j] + self.a)
            self.intersections.append(Intersection(k, -1, np.array([self.xs[i], self.ys[j]]), self.a, arms, box))
        for (i, j), k in idx.items():
            for di, dj in ((1, 0), (0, 1)):
                if (i + di, j + dj) in idx:
                    self._road(k, idx[(i + di, j + dj)])
        for inter in self.intersections:
            self._intersection(inter)
        self._carpark()
        self._connector_boundaries()

    def _road(self, ia: int, ib: int) -> None:
        """Both directions of the street between intersections ia and ib: lanes, groups, boundaries, walkways."""
        ca, cb = self.intersections[ia].center, self.intersections[ib].center
        u = (cb - ca) / detmath.norm(cb - ca)
        nrm = np.array([-u[1], u[0]])
        p0, p1 = ca + u * self.a, cb - u * self.a
        bnd = {}
        for j in range(-self.n, self.n + 1):
            btype = 2 if j in (0, -self.n, self.n) else 0
            bnd[j] = self.add("boundaries", LineString([p0 + nrm * j * LANE_WIDTH_M, p1 + nrm * j * LANE_WIDTH_M]),
                              boundary_type_fid=btype, has_reflectors=0)
        groups = [self._lane_group(ia, ib, +1.0, bnd), self._lane_group(ib, ia, -1.0, bnd)]
        seg = _rect(p0, p1, nrm, -self.hw, self.hw)
        self.add("road_segments", seg, lane_group_fids=",".join(str(g) for g in groups))
        for sgn in (1.0, -1.0):
            lo, hi = sorted((sgn * self.hw, sgn * (self.hw + WALKWAY_WIDTH_M)))
            fid = self.add("walkways", _rect(p0, p1, nrm, lo, hi))
            mid = nrm * (lo + hi) / 2  # path direction chosen so that its left normal points away from the road
            a, b = (p0 + mid, p1 + mid) if sgn > 0 else (p1 + mid, p0 + mid)
            self.walkway_paths.append(PedPath(fid, a, b))

    def _lane_group(self, ia: int, ib: int, sgn_ab: float, bnd: dict[int, int]) -> int:
        """Lanes travelling from intersection ia to ib; sgn_ab = +1 if that is the road's reference direction."""
        ca, cb = self.intersections[ia].center, self.intersections[ib].center
        h = (cb - ca) / detmath.norm(cb - ca)
        nrm = np.array([-h[1], h[0]])
        p0, p1 = ca + h * self.a, cb - h * self.a
        group_fid = self._next_fid
        self._next_fid += 1
        arm_a = int(np.argmax(detmath.dot(ARM_DIRS, h)))
        arm_b = int(np.argmax(detmath.dot(ARM_DIRS, -h)))
        self.outgoing[(ia, arm_a)], self.incoming[(ib, arm_b)] = [], []
        lats, lefts, rights = [], {}, {}
        for k in range(self.n):
            off = self.side * (k + 0.5) * LANE_WIDTH_M
            lane_index = k if not self.left_hand else self.n - 1 - k
            left_j = round(sgn_ab * (off + LANE_WIDTH_M / 2) / LANE_WIDTH_M)
            right_j = round(sgn_ab * (off - LANE_WIDTH_M / 2) / LANE_WIDTH_M)
            lefts[lane_index], rights[lane_index] = bnd[left_j], bnd[right_j]
            poly = _rect(p0, p1, nrm, off - LANE_WIDTH_M / 2, off + LANE_WIDTH_M / 2)
            lane_fid = self.add("lanes_polygons", poly, lane_group_fid=group_fid, lane_index=lane_index,
                                left_boundary_fid=bnd[left_j], right_boundary_fid=bnd[right_j],
                                speed_limit_mps=self.speed_limit, width=LANE_WIDTH_M, lane_type_fid=0,
                                road_type_fid=0, left_offset=0.0, right_offset=0.0, min_speed=0.0,
                                max_speed=self.speed_limit, stops=0, name=f"lane_{group_fid}_{lane_index}")
            self.layers["lanes_polygons"][-1].props["lane_fid"] = lane_fid
            line = _sample(p0 + nrm * off, p1 + nrm * off)
            self.add("baseline_paths", LineString(line), lane_fid=lane_fid, lane_connector_fid=None, path_type_fid=0)
            e = self._edge(lane_fid, group_fid, line, False, ib, arm_b, "straight", self.speed_limit)
            self.edges[e]["outer"] = k == self.n - 1
            self.outgoing[(ia, arm_a)].append(e)
            self.incoming[(ib, arm_b)].append(e)
            lats += [off - LANE_WIDTH_M / 2, off + LANE_WIDTH_M / 2]
        self.layers["lane_groups_polygons"].append(MapFeature(group_fid, _rect(p0, p1, nrm, min(lats), max(lats)), {
            "left_boundary_fid": lefts[0], "right_boundary_fid": rights[self.n - 1]}))
        self.group_out[(ia, arm_a)], self.group_in[(ib, arm_b)] = group_fid, group_fid
        return group_fid

    def _edge(self, fid: int, group_fid: int, line: np.ndarray, conn: bool, inter: int, arm: int, turn: str,
              speed: float) -> int:
        """Register a lane-graph edge (centreline `line` (K, 2)); returns its index."""
        self.edges.append({"fid": fid, "group": group_fid, "line": line, "conn": conn, "inter": inter, "arm": arm,
                           "turn": turn, "speed": speed, "succ": [], "outer": False})
        return len(self.edges) - 1

    # ------------------------------------------------------------------------------------------- intersections
    def _intersection(self, inter: Intersection) -> None:
        """Box, crosswalks, stop lines, lights and lane connectors of one intersection."""
        inter.fid = self.add("intersections", inter.polygon, intersection_type_fid=1, is_mini=0)
        conn_polys = []
        for arm_in in inter.arms:
            u = ARM_DIRS[arm_in]
            nrm = np.array([-u[1], u[0]])
            c = inter.center
            cw = _rect(c + u * (self.a + 0.5), c + u * (self.a + 4.0), nrm, -self.hw, self.hw)
            lane_fids = ",".join(str(self.edges[e]["fid"]) for e in self.incoming[(inter.index, arm_in)])
            cw_fid = self.add("crosswalks", cw, intersection_fids=str(inter.fid), lane_fids=lane_fids, is_marked=1)
            mid = c + u * (self.a + 2.25)
            ext = self.hw + 1.5  # pedestrians wait on the walkway, >= 0.8 m behind the rounded kerb (KERB_RADIUS_M)
            self.crosswalk_paths.append(PedPath(cw_fid, mid - nrm * ext, mid + nrm * ext, inter.index, arm_in))
            conn_polys += self._approach(inter, arm_in, lane_fids)
        inter.polygon = shapely.unary_union([inter.polygon] + conn_polys + self._kerb_fillets(inter))
        self.layers["intersections"][-1].geometry = inter.polygon

    def _kerb_fillets(self, inter: Intersection) -> list[Polygon]:
        """Rounded kerb corners (radius KERB_RADIUS_M) in the concave corners where each road meets the box edge: the
        drivable area a turning vehicle's front corner sweeps over when it leaves the box slightly rotated."""
        r, out = KERB_RADIUS_M, []
        for arm in inter.arms:
            u = ARM_DIRS[arm]
            for n in (np.array([-u[1], u[0]]), np.array([u[1], -u[0]])):
                p0 = inter.center + u * self.a + n * self.hw  # the corner: box edge meets the kerb line
                square = Polygon([p0, p0 + u * r, p0 + (u + n) * r, p0 + n * r])
                out.append(square.difference(Point(p0 + (u + n) * r).buffer(r, quad_segs=8)))
        return out

    def _approach(self, inter: Intersection, arm_in: int, lane_fids: str) -> list[Polygon]:
        """Stop line, traffic light and connectors for the traffic entering `inter` from arm `arm_in`."""
        c, u = inter.center, ARM_DIRS[arm_in]
        nrm_in = np.array([u[1], -u[0]])  # left normal of the inbound travel direction -u
        lo, hi = sorted((self.side * self.hw, 0.0))
        stop_fid = self._next_fid + 1  # traffic light first, then the stop polygon
        light_fid = self.add("traffic_lights", Point(c + u * (self.a + 4.5) + nrm_in * self.side * (self.hw + 0.5)),
                             intersection_fid=inter.fid, stop_polygon_fid=stop_fid)
        self.add("stop_polygons", _rect(c + u * (self.a + 5.0), c + u * (self.a + 4.0), nrm_in, lo, hi),
                 stop_polygon_type_fid=2, lane_group_fid=self.group_in[(inter.index, arm_in)], lane_fids=lane_fids,
                 traffic_light_fids=str(light_fid), lane_connector_fids="")
        ins = self.incoming[(inter.index, arm_in)]
        plans: list[tuple[int, int, int, str]] = []  # (k_in, k_out, arm_out, turn)
        for arm_out in inter.arms:
            if arm_out == arm_in:
                continue
            turn = _turn_type(-u, ARM_DIRS[arm_out])
            near = (turn == "left") == self.left_hand
            ks = range(self.n) if turn == "straight" else [self.n - 1] if near else [0]
            plans += [(k, k, arm_out, turn) for k in ks]
        for k in range(self.n):  # corner intersections: give every lane a way out (concentric arcs, no conflicts)
            if not any(p[0] == k for p in plans):
                plans += [(k, k, p[2], p[3]) for p in plans if p[0] != k]
        polys, group_conns = [], {}
        for k_in, k_out, arm_out, turn in sorted(set(plans)):
            if arm_out not in group_conns:
                group_conns[arm_out] = (self._next_fid, [])
                self._next_fid += 1
            polys.append(self._connector(inter, arm_in, arm_out, ins[k_in], k_out, turn, stop_fid,
                                         group_conns[arm_out]))
        for arm_out, (gfid, cpolys) in group_conns.items():
            self.layers["lane_group_connectors"].append(MapFeature(gfid, shapely.unary_union(cpolys), {
                "intersection_fid": inter.fid, "from_lane_group_fid": self.group_in[(inter.index, arm_in)],
                "to_lane_group_fid": self.group_out[(inter.index, arm_out)]}))
        stop = self.layers["stop_polygons"][-1]
        stop.props["lane_connector_fids"] = ",".join(str(f.fid) for f in self.layers["lane_connectors"]
                                                     if f.props["traffic_light_stop_line_fids"] == str(stop.fid))
        return polys

    def _connector(self, inter: Intersection, arm_in: int, arm_out: int, e_in: int, k_out: int, turn: str,
                   stop_fid: int, group: tuple[int, list]) -> Polygon:
        """One lane connector (Bezier centreline, baseline path, width polygon, graph edge); returns its polygon."""
        e_out = self.outgoing[(inter.index, arm_out)][k_out]
        a_line, b_line = self.edges[e_in]["line"], self.edges[e_out]["line"]
        line = _bezier_turn(a_line[-1], -ARM_DIRS[arm_in], b_line[0], ARM_DIRS[arm_out])
        speed = self.speed_limit if turn == "straight" else 6.7
        fid = self.add("lane_connectors", LineString(line), exit_lane_fid=self.edges[e_in]["fid"],
                       entry_lane_fid=self.edges[e_out]["fid"], exit_lane_group_fid=self.edges[e_in]["group"],
                       entry_lane_group_fid=self.edges[e_out]["group"], lane_group_connector_fid=group[0],
                       intersection_fid=inter.fid, turn_type_fid=TURN_TYPE_FID[turn],
                       traffic_light_stop_line_fids=str(stop_fid), speed_limit_mps=speed, overlap=0)
        poly = LineString(line).buffer(LANE_WIDTH_M / 2, cap_style="flat")
        group[1].append(poly)
        bp = self.add("baseline_paths", LineString(line), lane_fid=None, lane_connector_fid=fid, path_type_fid=0)
        self.add("gen_lane_connectors_scaled_width_polygons", poly, lane_connector_fid=fid, baseline_path_fid=bp,
                 left_boundary_fid=None, right_boundary_fid=None)
        e = self._edge(fid, group[0], line, True, inter.index, arm_in, turn, speed)
        self.edges[e_in]["succ"].append(e)
        self.edges[e]["succ"].append(e_out)
        return poly

    def _connector_boundaries(self) -> None:
        """Left and right edge polylines of every lane connector, as `boundaries` rows referenced by its
        `gen_lane_connectors_scaled_width_polygons` row (the devkit looks them up by fid). They are the connector
        centreline offset by half a lane width, in the direction of travel, i.e. the long sides of its width
        polygon. Added after everything else, so the fids of the other features do not move."""
        centre = {f.fid: f.geometry for f in self.layers["lane_connectors"]}
        for poly in self.layers["gen_lane_connectors_scaled_width_polygons"]:
            line = centre[poly.props["lane_connector_fid"]]
            for side, sign in (("left", 1.0), ("right", -1.0)):
                edge = line.offset_curve(sign * LANE_WIDTH_M / 2)  # shapely >= 2 keeps the line's direction
                poly.props[f"{side}_boundary_fid"] = self.add("boundaries", edge, boundary_type_fid=3,
                                                              has_reflectors=0)

    def _carpark(self) -> None:
        """One parking lot inside the south-west block plus a driveway (generic drivable area) to its street."""
        x0, x1, y0, y1 = self.xs[0], self.xs[1], self.ys[0], self.ys[1]
        inner = self.hw + WALKWAY_WIDTH_M + 3.0
        lot = shapely.box(x0 + inner, y0 + inner, x1 - inner, min(y1 - inner, y0 + inner + 25.0))
        self.add("carpark_areas", lot, heading=0.0)
        xm = (x0 + x1) / 2
        self.add("generic_drivable_areas", shapely.box(xm - 3.0, y0 + self.hw, xm + 3.0, y0 + inner + 1.0))


def _vertex_headings(h: np.ndarray) -> np.ndarray:
    """(K,) unwrapped vertex headings from (K-1,) segment headings: mean of the adjacent segments inside, linear
    extrapolation at the ends (the true tangent of a sampled arc), so headings stay continuous across edges."""
    if len(h) == 1:
        return np.concatenate([h, h])
    mid = 0.5 * (h[:-1] + h[1:])
    return np.concatenate([[1.5 * h[0] - 0.5 * h[1]], mid, [1.5 * h[-1] - 0.5 * h[-2]]])


def _graph(edges: list[dict]) -> LaneGraph:
    """Concatenate edge centrelines (1 m gap between edges keeps np.interp from mixing them)."""
    pts, cum, head, offsets, lengths, curve = [], [], [], [], [], []
    start = 0.0
    for e in edges:
        line = e["line"]
        seg = np.diff(line, axis=0)
        ds = detmath.norm_rows(seg)
        h = np.unwrap(detmath.arctan2(seg[:, 1], seg[:, 0]))
        kappa = np.abs(np.diff(h)) / np.maximum(ds[1:], 1e-3) if len(h) > 1 else np.zeros(1)
        curve.append(min(e["speed"], float(np.sqrt(TURN_LAT_ACCEL / max(kappa.max(initial=0.0), 1e-6)))))
        s = np.concatenate([[0.0], np.cumsum(ds)])
        pts.append(line)
        cum.append(start + s)
        head.append(_vertex_headings(h))
        offsets.append(start)
        lengths.append(s[-1])
        start += s[-1] + 1.0
    return LaneGraph(
        fid=np.array([e["fid"] for e in edges]), group_fid=np.array([e["group"] for e in edges]),
        is_connector=np.array([e["conn"] for e in edges]), length=np.array(lengths), offset=np.array(offsets),
        intersection=np.array([e["inter"] for e in edges]), arm=np.array([e["arm"] for e in edges]),
        speed_limit=np.array([e["speed"] for e in edges]), curve_speed=np.array(curve),
        outer=np.array([e["outer"] for e in edges]), turn=[e["turn"] for e in edges], successors=[list(e["succ"]) for e in edges],
        pts=np.concatenate(pts), cum=np.concatenate(cum), heading=np.concatenate(head),
        index_of_fid={int(e["fid"]): i for i, e in enumerate(edges)})


def build_city(location: str, seed: int) -> City:
    """Deterministic street-grid city for a nuPlan location (same (location, seed) -> identical map).

    Raises:
        ValueError: unknown location.
    """
    if location not in LOCATION_INFO:
        raise ValueError(f"unknown location {location!r}; expected one of {sorted(LOCATION_INFO)}")
    version, epsg, _, _, _ = LOCATION_INFO[location]
    rng = np.random.default_rng([int(seed), sorted(LOCATION_INFO).index(location)])
    b = _MapBuilder(rng, location)
    b.build()
    vmap = VectorMap(location=location, version=version, epsg=epsg, layers=b.layers)
    return City(location=location, version=version, epsg=epsg, origin=b.origin, vector_map=vmap,
                graph=_graph(b.edges), intersections=b.intersections, crosswalk_paths=b.crosswalk_paths,
                walkway_paths=b.walkway_paths, lanes_per_direction=b.n, left_hand=b.left_hand)
