"""Speed zones: the generated city's, GeoJSON in and out, refused files, and the point-in-zone test."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from fleetstream.errors import FleetstreamError
from fleetstream.reference.zones import (
    KM_PER_DEG_LAT,
    ZONE_GAP_KM,
    Zone,
    ZoneIndex,
    generate_zones,
    read_zones,
    to_geojson,
    zone_index,
)

SQUARE = Zone("sq", "square", 30.0, (0.0, 0.0, 1.0, 1.0), (0.0, 1.0, 1.0, 0.0))


def test_generated_zones_are_apart_and_round_trip_through_geojson() -> None:
    zones = generate_zones()
    assert len(zones) == 12
    assert {z.limit_kmh for z in zones} == {30.0, 50.0}
    km_east = KM_PER_DEG_LAT * math.cos(math.radians(32.0853))
    for a, b in itertools.combinations(zones, 2):
        (a0, a1, a2, a3), (b0, b1, b2, b3) = a.bbox, b.bbox
        gap = max((b0 - a1) * KM_PER_DEG_LAT, (a0 - b1) * KM_PER_DEG_LAT, (b2 - a3) * km_east, (a2 - b3) * km_east)
        assert gap > ZONE_GAP_KM, (a.zone_id, b.zone_id, gap)
    text = to_geojson(zones).decode()
    document = json.loads(text)
    ring = document["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert ring[0] == [zones[0].lons[0], zones[0].lats[0]]
    assert read_zones(text) == zones


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"zone_id": "a", "limit_kmh": 30}},
         "zone 'a': geometry must be a Polygon"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]], [[0, 0], [0, 1], [1, 1]]]},
          "properties": {"zone_id": "a", "limit_kmh": 30}}, "holes"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]},
          "properties": {"zone_id": "a", "limit_kmh": 30}}, "at least three"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}, "properties": {"zone_id": "a"}},
         "lack limit_kmh"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]},
          "properties": {"zone_id": "a", "limit_kmh": "fast"}}, "limit_kmh must be a positive number"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 95], [1, 0], [1, 1]]]},
          "properties": {"zone_id": "a", "limit_kmh": 30}}, "[lon, lat] order"),
    ],
)  # fmt: skip
def test_a_bad_zone_is_refused_naming_it(feature: dict[str, object], message: str) -> None:
    text = json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", **feature}]})
    with pytest.raises(FleetstreamError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_zones(text, "zones.geojson")


def test_not_a_feature_collection_and_duplicate_ids_are_refused() -> None:
    with pytest.raises(FleetstreamError, match="not JSON"):
        read_zones("{", "z")
    with pytest.raises(FleetstreamError, match="FeatureCollection"):
        read_zones('{"type": "Feature"}', "z")
    twice = json.loads(to_geojson([SQUARE, SQUARE]))
    with pytest.raises(FleetstreamError, match="two zones are named 'sq'"):
        read_zones(json.dumps(twice), "z")


def test_points_in_and_out_of_a_zone() -> None:
    # a concave "C": the notch (0.4..0.6, 0.3..1) is outside
    c = Zone("c", "c", 30.0, (0, 0, 1, 1, 0.3, 0.3, 1, 1), (0, 1, 1, 0.6, 0.6, 0.4, 0.4, 0))
    lat = np.array([0.1, 0.5, 0.9, 0.5, 0.2, -0.1, 0.5])
    lon = np.array([0.5, 0.2, 0.8, 0.5, 0.5, 0.5, 1.5])
    assert zone_index([c], lat, lon).tolist() == [0, 0, 0, -1, 0, -1, -1]


def test_the_grid_index_answers_as_the_plain_loop() -> None:
    """The first zone that holds a point wins, also where zones overlap and share a grid cell."""
    shifted = Zone("b", "b", 50.0, (0.5, 0.5, 1.5, 1.5), (0.5, 1.5, 1.5, 0.5))
    zones = [*generate_zones(), SQUARE, shifted]
    rng = np.random.default_rng(3)
    lat = np.concatenate([rng.uniform(31.9, 32.3, 50_000), rng.uniform(-0.2, 1.7, 20_000)])
    lon = np.concatenate([rng.uniform(34.6, 35.0, 50_000), rng.uniform(-0.2, 1.7, 20_000)])
    # the vertices themselves and points on edges too
    lat = np.concatenate([lat, *[np.array(z.lats) for z in zones], [0.5, 1.0, 0.75]])
    lon = np.concatenate([lon, *[np.array(z.lons) for z in zones], [1.0, 0.5, 1.0]])
    plain = np.full(len(lat), -1)
    for k, zone in reversed(list(enumerate(zones))):
        plain = np.where(zone_index([zone], lat, lon) == 0, k, plain)
    got = ZoneIndex(zones).lookup(lat, lon)
    assert (got == plain).all()
    assert (got >= 0).sum() > 5_000
    assert (got == len(zones) - 1).sum() > 1_000
