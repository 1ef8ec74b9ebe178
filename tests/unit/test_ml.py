"""The driving-style model's pure parts: the split by car, the scores, live scoring's frame, and
what scoring does when there is no tracking server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from fleetstream.config import MlflowSettings
from fleetstream.ml import overheat
from fleetstream.ml.features import FEATURES
from fleetstream.ml.score import Champion, score_windows
from fleetstream.ml.train import score, split_by_car
from fleetstream.testing import free_port_base


def test_split_by_car_holds_out_whole_cars_of_every_class() -> None:
    cars = pd.Series([f"c{i // 5}" for i in range(100)])  # 20 cars, 5 windows each
    labels = pd.Series(["calm" if int(c[1:]) % 3 == 0 else "aggressive" for c in cars])
    test = split_by_car(labels, cars, 0.3, seed=3)
    assert set(cars[test]).isdisjoint(set(cars[~test]))
    assert set(labels[test]) == set(labels[~test]) == {"calm", "aggressive"}
    assert (test == split_by_car(labels, cars, 0.3, seed=3)).all()  # the seed fixes it
    assert 4 <= len(set(cars[test])) <= 8


def test_scores_are_per_class_and_macro() -> None:
    got = score(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert got.accuracy == 0.75
    assert got.precision == {"a": 1.0, "b": pytest.approx(2 / 3)}
    assert got.recall == {"a": 0.5, "b": 1.0}
    assert got.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_score_windows_gives_style_probabilities_and_confidence() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, len(FEATURES))), columns=list(FEATURES))
    y = np.where(x["throttle_max"] > 0, "aggressive", "calm")  # no "normal" among the classes
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    windows = x.head(5).assign(car_id=[f"c{i}" for i in range(5)], window_start=0, window_end=1, model="M",
                               color="red")  # fmt: skip
    got = score_windows(windows, model, "7")
    assert list(got["style"]) == list(model.predict(x.head(5)))
    assert (got["p_normal"] == 0.0).all()
    assert np.allclose(got[["p_calm", "p_normal", "p_aggressive"]].sum(axis=1), 1.0)
    assert (got["confidence"] == got[["p_calm", "p_aggressive"]].max(axis=1)).all()
    assert set(got["model_version"]) == {"7"}
    assert list(got["car_id"]) == [f"c{i}" for i in range(5)]


def test_no_tracking_server_means_no_scoring_and_no_error(caplog: pytest.LogCaptureFixture) -> None:
    champion = Champion(MlflowSettings(port=free_port_base(1)), refresh_s=3600)
    with caplog.at_level("INFO", logger="fleetstream.ml.score"):
        assert champion.current() is None
        assert champion.current() is None  # not asked again within refresh_s
    assert [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()] != []


def test_overheat_warnings_are_scored_by_run_and_only_before_the_crossing() -> None:
    episodes = [
        {"fault": "overheat", "car_id": "a", "started_ms": 100_000, "first_event_time": 180_000},
        {"fault": "overheat", "car_id": "a", "started_ms": 900_000, "first_event_time": 975_000},
        {"fault": "overheat", "car_id": "b", "started_ms": 0, "first_event_time": None},  # never crossed
        {"fault": "sensor", "car_id": "b", "started_ms": 0, "first_event_time": 1_000},
    ]
    warned = [
        ("a", 120_000), ("a", 150_000), ("a", 179_000),  # one run, in the first fault: right, lead 60 s
        ("a", 400_000),  # a run of its own, no fault heating: wrong
        ("a", 975_000),  # at the second crossing, not before it: wrong, not caught
        ("b", 10_000),  # b never crossed the limit: wrong
    ]  # fmt: skip
    s = overheat.score(warned, episodes)
    assert (s.overheats, s.caught, s.warnings, s.right) == (2, 1, 4, 1)
    assert s.leads_s == [60.0]
    assert s.as_dict()["median_lead_s"] == 60.0
    empty = overheat.score([], episodes)
    assert (empty.recall, empty.precision, empty.median_lead_s) == (0.0, 0.0, None)
