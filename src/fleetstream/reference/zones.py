"""Speed zones: polygons with a speed limit (school streets, residential areas), as GeoJSON.

Zones are reference data: ``fleetstream reference publish`` writes them as ``speed_zones.geojson``
beside the car tables, the pipeline tags each report with the zone it lies in (silver's ``zone_id``
and ``zone_limit``) and the ``zone_overspeed`` rule compares the speed with the limit. The simulator
drives the same zones (its drivers slow down before them), so its ground truth says which reports
break a zone's limit.

Whether a point lies in a zone is decided by one formula, :func:`zone_index` here (NumPy) and its
Spark twin :func:`fleetstream.pipeline.enrich.zone_columns`: even-odd ray casting along the
longitude axis, the same floating-point operations in the same order, so both agree on every
point, the ones on an edge included.

>>> zones = generate_zones()
>>> len(zones), zones[0].zone_id, zones[0].limit_kmh
(12, 'zone-01', 30.0)
>>> import numpy as np
>>> zone_index(zones, np.array([zones[0].center[0], 0.0]), np.array([zones[0].center[1], 0.0])).tolist()
[0, -1]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetstream.errors import FleetstreamError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ZONES_FILE = "speed_zones.geojson"
KM_PER_DEG_LAT = 111.32
#: the city the simulator drives (fleetstream.sim.fleet.FleetConfig's defaults): centre and radius (km)
CITY = (32.0853, 34.7818, 8.0)
#: zones are at least this far apart (km, bounding boxes): a car that leaves one at any speed the
#: simulator drives takes longer than the default rule's clear time to reach the next
ZONE_GAP_KM = 1.0
MAX_CELLS = 1_000_000


@dataclass(frozen=True)
class Zone:
    zone_id: str
    name: str
    limit_kmh: float
    lats: tuple[float, ...]  # the ring's vertices, not closed (the last is not the first again)
    lons: tuple[float, ...]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lat, max lat, min lon, max lon)."""
        return min(self.lats), max(self.lats), min(self.lons), max(self.lons)

    @property
    def center(self) -> tuple[float, float]:
        return sum(self.lats) / len(self.lats), sum(self.lons) / len(self.lons)

    def ring(self) -> list[tuple[float, float, float, float]]:
        """Every edge of the ring: (lat_i, lon_i, lat_j, lon_j)."""
        n = len(self.lats)
        return [(self.lats[i], self.lons[i], self.lats[(i + 1) % n], self.lons[(i + 1) % n]) for i in range(n)]

    def edges(self) -> list[tuple[float, float, float, float]]:
        """The edges that a ray along the longitude axis can cross (a horizontal edge never counts in
        the even-odd rule)."""
        return [edge for edge in self.ring() if edge[0] != edge[2]]

    def feature(self) -> dict[str, Any]:
        ring = [[lon, lat] for lat, lon in zip(self.lats, self.lons, strict=True)]
        return {
            "type": "Feature",
            "properties": {"zone_id": self.zone_id, "name": self.name, "limit_kmh": self.limit_kmh},
            "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        }


def generate_zones(city: tuple[float, float, float] = CITY, seed: int = 7) -> list[Zone]:
    """The simulated city's speed zones: twelve irregular polygons about 1 km across, 30 km/h
    (school streets) or 50 km/h (residential), on a jittered grid within 7.6 km of the centre, with
    more than :data:`ZONE_GAP_KM` between any two."""
    lat0, lon0, _ = city
    rng = np.random.default_rng([seed, 0x20E5])
    km_per_deg_lon = KM_PER_DEG_LAT * math.cos(math.radians(lat0))
    zones: list[Zone] = []
    spacing = 3.2
    cells = [(i, j) for i in range(-2, 3) for j in range(-2, 3) if (i * spacing) ** 2 + (j * spacing) ** 2 < 6.6**2]
    for north_i, east_j in cells[:12]:
        north = north_i * spacing + rng.uniform(-0.4, 0.4)
        east = east_j * spacing + rng.uniform(-0.4, 0.4)
        corners = int(rng.integers(5, 9))
        angles = np.linspace(0, 2 * math.pi, corners, endpoint=False) + rng.uniform(0, 2 * math.pi / corners)
        radii = rng.uniform(0.35, 0.6, corners)
        lats = tuple(
            round(lat0 + (north + r * math.cos(a)) / KM_PER_DEG_LAT, 6) for a, r in zip(angles, radii, strict=True)
        )
        lons = tuple(
            round(lon0 + (east + r * math.sin(a)) / km_per_deg_lon, 6) for a, r in zip(angles, radii, strict=True)
        )
        n = len(zones) + 1
        school = n % 3 != 0
        zones.append(Zone(f"zone-{n:02d}", f"{'school street' if school else 'residential'} {n}",
                          30.0 if school else 50.0, lats, lons))  # fmt: skip
    return zones


def to_geojson(zones: Sequence[Zone]) -> bytes:
    collection = {"type": "FeatureCollection", "features": [z.feature() for z in zones]}
    return json.dumps(collection, indent=1, ensure_ascii=False).encode() + b"\n"


def read_zones(text: str, where: str = ZONES_FILE) -> list[Zone]:
    """Zones from a GeoJSON FeatureCollection of Polygons with ``zone_id``, ``name`` and ``limit_kmh``
    properties. Anything else is refused with the feature and what is wrong with it."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FleetstreamError(f"{where}: not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise FleetstreamError(f"{where}: expected a GeoJSON FeatureCollection")
    zones, seen = [], set()
    for i, feature in enumerate(document.get("features") or []):
        label = f"{where}: feature #{i + 1}"
        props = (feature or {}).get("properties") or {}
        if "zone_id" in props:
            label = f"{where}: zone {props['zone_id']!r}"
        geometry = (feature or {}).get("geometry") or {}
        if geometry.get("type") != "Polygon":
            raise FleetstreamError(f"{label}: geometry must be a Polygon, not {geometry.get('type')!r}")
        rings = geometry.get("coordinates") or []
        if len(rings) != 1:
            raise FleetstreamError(f"{label}: a polygon with holes (more than one ring) is not supported")
        ring = [tuple(p) for p in rings[0]]
        if ring and ring[0] == ring[-1]:
            ring = ring[:-1]
        if len(ring) < 3 or any(len(p) < 2 for p in ring):
            raise FleetstreamError(f"{label}: a ring needs at least three [lon, lat] positions")
        try:
            lons = tuple(float(p[0]) for p in ring)
            lats = tuple(float(p[1]) for p in ring)
        except (TypeError, ValueError):
            raise FleetstreamError(f"{label}: positions must be [lon, lat] numbers") from None
        if not all(-90 <= a <= 90 for a in lats) or not all(-180 <= o <= 180 for o in lons):
            raise FleetstreamError(f"{label}: a position is outside [-180, 180] x [-90, 90] ([lon, lat] order)")
        missing = {"zone_id", "limit_kmh"} - set(props)
        if missing:
            raise FleetstreamError(f"{label}: properties lack {', '.join(sorted(missing))}")
        limit = props["limit_kmh"]
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
            raise FleetstreamError(f"{label}: limit_kmh must be a positive number, not {limit!r}")
        zone_id = str(props["zone_id"])
        if zone_id in seen:
            raise FleetstreamError(f"{where}: two zones are named {zone_id!r}")
        seen.add(zone_id)
        zones.append(Zone(zone_id, str(props.get("name") or zone_id), float(limit), lats, lons))
    return zones


def zone_index(zones: Sequence[Zone], lat: FloatArray, lon: FloatArray) -> IntArray:
    """For each point, the index of the first zone that holds it, or -1.

    A zone holds a point when a ray from it toward growing longitude crosses the zone's edges an odd
    number of times; an edge counts when its two ends lie on either side of the point's latitude (one
    strictly above) and the point lies west of where the edge meets that latitude."""
    return ZoneIndex(zones).lookup(lat, lon)


class ZoneIndex:
    """:func:`zone_index` for many lookups over the same zones: a grid of cells of ``cell_deg``
    names the zones whose bounding box meets each cell, so a point is tested against those only."""

    def __init__(self, zones: Sequence[Zone], cell_deg: float = 0.002) -> None:
        self.zones, self.cell = list(zones), cell_deg
        boxes = np.array([z.bbox for z in zones], dtype=np.float64).reshape(-1, 4)
        self.lat0 = float(boxes[:, 0].min()) if len(zones) else 0.0
        self.lon0 = float(boxes[:, 2].min()) if len(zones) else 0.0
        if len(zones):  # zones far apart get coarser cells: a million at most
            span = (boxes[:, 1].max() - self.lat0 + cell_deg) * (boxes[:, 3].max() - self.lon0 + cell_deg)
            self.cell = max(cell_deg, math.sqrt(span / MAX_CELLS))
        rows = int((boxes[:, 1].max() - self.lat0) // self.cell) + 1 if len(zones) else 0
        cols = int((boxes[:, 3].max() - self.lon0) // self.cell) + 1 if len(zones) else 0
        self.grid = np.full((rows, cols), -1, dtype=np.int64)  # the one zone there; -2: several
        for z, (lat_lo, lat_hi, lon_lo, lon_hi) in enumerate(boxes):
            cells = self.grid[self._row(lat_lo) : self._row(lat_hi) + 1, self._col(lon_lo) : self._col(lon_hi) + 1]
            cells[...] = np.where(cells == -1, z, -2)

    def _row(self, lat: float) -> int:
        return int((lat - self.lat0) // self.cell)

    def _col(self, lon: float) -> int:
        return int((lon - self.lon0) // self.cell)

    def lookup(self, lat: FloatArray, lon: FloatArray) -> IntArray:
        found = np.full(len(lat), -1, dtype=np.int64)
        if not self.zones:
            return found
        rows = np.floor((lat - self.lat0) / self.cell)
        cols = np.floor((lon - self.lon0) / self.cell)
        on_grid = (rows >= 0) & (rows < self.grid.shape[0]) & (cols >= 0) & (cols < self.grid.shape[1])
        where = np.flatnonzero(on_grid)
        candidate = self.grid[rows[where].astype(np.int64), cols[where].astype(np.int64)]
        near, candidate = where[candidate != -1], candidate[candidate != -1]  # the few points near a zone
        shared = near[candidate == -2]  # in a cell that several zones meet: each in turn, the first wins
        for z in np.unique(candidate[candidate >= 0]):
            points = near[candidate == z]
            found[points[_holds(self.zones[z], lat[points], lon[points])]] = z
        for z, zone in enumerate(self.zones if len(shared) else ()):
            points = shared[found[shared] < 0]
            found[points[_holds(zone, lat[points], lon[points])]] = z
        return found


def _holds(zone: Zone, lat: FloatArray, lon: FloatArray) -> npt.NDArray[np.bool_]:
    """Whether ``zone`` holds each point: its bounding box, then the even-odd ray cast."""
    lat_lo, lat_hi, lon_lo, lon_hi = zone.bbox
    odd = (lat >= lat_lo) & (lat <= lat_hi) & (lon >= lon_lo) & (lon <= lon_hi)
    crossings = np.zeros(len(lat), dtype=bool)
    for yi, xi, yj, xj in zone.edges():
        slope = (xj - xi) / (yj - yi)
        crossings ^= ((yi > lat) != (yj > lat)) & (lon < xi + (lat - yi) * slope)
    return np.asarray(odd & crossings, dtype=bool)
