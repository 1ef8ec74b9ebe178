"""`fleetstream ml train`: the driving-style classifier, tracked and registered in MLflow.

The seed's model (a random forest of 300 trees, depth 12, balanced class weights, fixed random
state) learns each car's driver profile (calm, normal, aggressive; the simulator's truth, in the
reference data's cars.json) from the 5-minute feature windows of ``gold/driving_features`` in
which the car moved (:func:`fleetstream.ml.features.scorable`).

- The features are read with delta-rs into Arrow and handed to pandas (no JVM is needed to train).
- Train and test sets are split by car, per class, so that no car is in both and every class is in
  the test set; the test cars are fixed by the seed.
- Beside the forest, two baselines are scored on the same test windows: the majority class, and the
  best single-feature threshold (a depth-2 tree on the one feature that separates the training
  windows best).
- MLflow gets the parameters, the metrics (accuracy, macro F1, per-class precision and recall), the
  confusion matrix and the feature importances as PNGs, and the model in the scikit-learn flavour
  with its signature and an input example, registered as a new version of ``fleetstream-driving-
  style``. The alias ``champion`` moves to it only when it beats the current champion on the same
  test windows (macro F1), so a worse model never serves.
- Nothing is logged or registered when the input is unusable (no features, one class only) or the
  tracking server does not answer: the command says why and exits non-zero.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ml.features import FEATURES, MIN_MOVING_REPORTS, WINDOW_MIN
from fleetstream.reference.catalog import PROFILES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
CHAMPION = "champion"
TRUSTED = ["sklearn.tree._tree.Tree"]  # what a saved forest holds beyond skops's default-trusted types


class TrainingError(FleetstreamError):
    """Training cannot run on this input, or cannot reach the tracking server."""


@dataclass(frozen=True)
class TrainOptions:
    test_share: float = 0.3  # share of each class's cars held out
    seed: int = 42
    trees: int = 300  # the seed's forest: 300 trees of depth 12, balanced class weights
    depth: int = 12

    @property
    def forest(self) -> dict[str, Any]:
        return {"n_estimators": self.trees, "max_depth": self.depth, "class_weight": "balanced"}


@dataclass
class Scores:
    accuracy: float
    macro_f1: float
    precision: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    run_id: str
    version: str
    forest: Scores
    baselines: dict[str, Scores]
    champion_f1: float | None  # the champion's macro F1 on the same test windows (None: there was none)
    promoted: bool
    train_cars: int
    test_cars: int
    train_windows: int
    test_windows: int
    seconds: float


def load_features(settings: Settings) -> pd.DataFrame:
    """The scorable feature windows with each car's label (``driver_profile``)."""
    import polars as pl

    from fleetstream.lake.read import scan
    from fleetstream.reference.publish import read

    frame = scan(settings, "gold/driving_features")
    if frame is None:
        raise TrainingError(
            f"There is no gold/driving_features table under {settings.lake.root}. The stream writes it once "
            f"{WINDOW_MIN}-minute windows have closed: run `fleetstream stream` (or `make run`) for a few minutes "
            "first, without --no-ml (FLEETSTREAM_STREAM_ML=false). Nothing was trained."
        )
    windows = frame.filter(pl.col("moving_events") >= MIN_MOVING_REPORTS).collect()
    try:
        cars = pl.read_ndjson(io.BytesIO(read(settings, settings.lake.dims, "cars.json")))
    except (OSError, FleetstreamError) as exc:
        raise TrainingError(
            f"The reference data's cars.json could not be read from {settings.lake.dims} ({exc}): it holds the "
            "labels. Publish it with `fleetstream reference publish`. Nothing was trained."
        ) from exc
    labelled = windows.join(cars.select("car_id", "driver_profile"), on="car_id", how="inner")
    return labelled.to_pandas()


def split_by_car(labels: pd.Series, cars: pd.Series, test_share: float, seed: int) -> npt.NDArray[np.bool_]:
    """A boolean mask of the test rows: per class, ``test_share`` of its cars (at least one, at most
    all but one), chosen by ``seed``; a car's rows are all on one side.

    >>> import pandas as pd
    >>> cars = pd.Series(["a", "a", "b", "c", "d", "d"])
    >>> labels = pd.Series(["x", "x", "x", "y", "y", "y"])
    >>> mask = split_by_car(labels, cars, 0.5, 1)
    >>> sorted(set(labels[mask])), set(cars[mask]) & set(cars[~mask])
    (['x', 'y'], set())
    >>> len(set(cars[mask]))  # one of x's two cars (ceil(0.5 * 2)), one of y's two
    2
    """
    rng = np.random.default_rng(seed)
    by_car = dict(zip(cars, labels, strict=False))
    test: set[str] = set()
    for label in sorted(set(by_car.values())):
        members = sorted(car for car, car_label in by_car.items() if car_label == label)
        take = min(max(1, math.ceil(test_share * len(members))), len(members) - 1)
        test.update(rng.permutation(members)[:take].tolist())
    return np.asarray(cars.isin(test))


def score(truth: Any, predicted: Any, classes: list[str]) -> Scores:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    kw: dict[str, Any] = {"labels": classes, "zero_division": 0}
    precision = precision_score(truth, predicted, average=None, **kw)
    recall = recall_score(truth, predicted, average=None, **kw)
    return Scores(
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, average="macro", **kw)),
        precision={c: float(p) for c, p in zip(classes, precision, strict=True)},
        recall={c: float(r) for c, r in zip(classes, recall, strict=True)},
    )


def _threshold_baseline(x_train: pd.DataFrame, y_train: pd.Series) -> tuple[str, Any]:
    """The depth-2 tree on the single feature that fits the training windows best (macro F1)."""
    from sklearn.metrics import f1_score
    from sklearn.tree import DecisionTreeClassifier

    best: tuple[float, str, Any] | None = None
    for name in FEATURES:
        tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x_train[[name]], y_train)
        fit = float(f1_score(y_train, tree.predict(x_train[[name]]), average="macro"))
        if best is None or fit > best[0]:
            best = (fit, name, tree)
    assert best is not None
    return best[1], best[2]


def _figures(truth: Any, predicted: Any, classes: list[str], importances: pd.Series) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay.from_predictions(truth, predicted, labels=classes, ax=ax, colorbar=False)
    ax.set_title("driving style: held-out cars' windows")
    matrix.tight_layout()
    bars, ax2 = plt.subplots(figsize=(7, 7))
    importances.sort_values().plot.barh(ax=ax2)
    ax2.set_title("feature importance (mean decrease in impurity)")
    bars.tight_layout()
    return {"confusion_matrix.png": matrix, "feature_importance.png": bars}


def check_server(settings: Settings) -> None:
    """Raise :class:`TrainingError` unless the tracking server answers (http URIs only)."""
    from fleetstream.local.mlflow_server import healthy

    uri = settings.mlflow.uri
    if uri.startswith(("http://", "https://")) and not healthy(uri, timeout=5):
        start = "start it with `fleetstream up --mlflow`" if settings.mlflow.managed else "check the address"
        raise TrainingError(
            f"The MLflow tracking server at {uri} does not answer: {start} (or set FLEETSTREAM_MLFLOW__TRACKING_URI). "
            "Nothing was trained or registered."
        )


def train(settings: Settings, options: TrainOptions = TrainOptions()) -> TrainResult:
    """Train, evaluate, log and register; move ``champion`` when the new model is better."""
    began = time.monotonic()
    check_server(settings)
    frame = load_features(settings)
    if frame.empty:
        raise TrainingError(
            f"gold/driving_features holds no window in which a car moved for {MIN_MOVING_REPORTS} reports (or none of "
            "its cars is in the reference data): let the fleet drive longer. Nothing was trained."
        )
    classes = [p for p in PROFILES if p in set(frame["driver_profile"])]
    cars_per_class = frame.groupby("driver_profile")["car_id"].nunique()
    if len(classes) < 2 or int(cars_per_class.min()) < 2:
        raise TrainingError(
            "Training needs at least two driving styles with two cars each (one to learn from, one to test on); "
            f"the features hold {', '.join(f'{k}: {v} cars' for k, v in cars_per_class.items())}. "
            "Simulate more cars. Nothing was trained."
        )
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier

    test = split_by_car(frame["driver_profile"], frame["car_id"], options.test_share, options.seed)
    x, y = frame[list(FEATURES)].astype("float64"), frame["driver_profile"]
    x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
    forest = RandomForestClassifier(**options.forest, random_state=options.seed, n_jobs=-1).fit(x_train, y_train)
    predicted = forest.predict(x_test)
    scores = score(y_test, predicted, classes)
    majority = DummyClassifier(strategy="most_frequent").fit(x_train, y_train)
    feature, stump = _threshold_baseline(x_train, y_train)
    baselines = {
        "majority": score(y_test, majority.predict(x_test), classes),
        "threshold": score(y_test, stump.predict(x_test[[feature]]), classes),
    }
    importances = _importances(forest)
    test_cars = sorted(set(frame.loc[test, "car_id"]))
    return _log(settings, options, forest, x_test, y_test, scores, baselines, feature, importances, classes,
                frame, test, test_cars, began)  # fmt: skip


def _requirements() -> list[str]:
    """What the model needs to load and predict, pinned to the versions it was trained with (given,
    not inferred: MLflow's inference imports and scans the environment for about 20 s)."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("scikit-learn", "numpy", "scipy", "skops", "pandas")]


def _importances(forest: Any) -> pd.Series:
    import pandas as pd

    return pd.Series(forest.feature_importances_, index=list(FEATURES))


def _log(
    settings: Settings, options: TrainOptions, forest: Any, x_test: pd.DataFrame, y_test: pd.Series, scores: Scores,
    baselines: dict[str, Scores], feature: str, importances: pd.Series, classes: list[str], frame: pd.DataFrame,
    test: npt.NDArray[np.bool_], test_cars: list[str], began: float,
) -> TrainResult:  # fmt: skip
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    name = settings.mlflow.model_name
    mlflow.set_tracking_uri(settings.mlflow.uri)
    mlflow.set_experiment(settings.mlflow.experiment)
    client = MlflowClient()
    with mlflow.start_run(run_name=f"driving-style {time.strftime('%Y-%m-%d %H:%M:%S')}") as run:
        mlflow.log_params({
            **options.forest, "random_state": options.seed, "test_share": options.test_share, "window_min": WINDOW_MIN,
            "min_moving_reports": MIN_MOVING_REPORTS, "features": len(FEATURES), "threshold_feature": feature,
            "train_cars": frame.loc[~test, "car_id"].nunique(), "test_cars": len(test_cars),
            "train_windows": int((~test).sum()), "test_windows": int(test.sum()),
        })  # fmt: skip
        metrics = {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1}
        metrics |= {f"precision_{c}": v for c, v in scores.precision.items()}
        metrics |= {f"recall_{c}": v for c, v in scores.recall.items()}
        for base, s in baselines.items():
            metrics |= {f"{base}_accuracy": s.accuracy, f"{base}_macro_f1": s.macro_f1}
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"test_cars": test_cars}, "test_cars.json")
        import matplotlib.pyplot as plt

        for file, figure in _figures(y_test, forest.predict(x_test), classes, importances).items():
            mlflow.log_figure(figure, file)
            plt.close(figure)
        signature = infer_signature(x_test, forest.predict(x_test))
        # skops, MLflow's default format for scikit-learn, loads only the types it is told to trust:
        # the forest's trees, written here
        info = mlflow.sklearn.log_model(forest, name="model", signature=signature, input_example=x_test.head(3),
                                        registered_model_name=name, skops_trusted_types=TRUSTED,
                                        pip_requirements=_requirements())  # fmt: skip
        version = str(info.registered_model_version)
        champion_f1: float | None = None
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            current = None
        if current is not None:
            champion = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
            try:
                champion_f1 = score(y_test, champion.predict(x_test), classes).macro_f1
                mlflow.log_metric("champion_macro_f1", champion_f1)
            except (ValueError, KeyError) as exc:  # trained on other features: not comparable
                log.warning("the champion (version %s) cannot score these features (%s); it is replaced",
                            current.version, exc)  # fmt: skip
        promoted = champion_f1 is None or scores.macro_f1 > champion_f1
        digest = hashlib.sha256(",".join(test_cars).encode()).hexdigest()[:12]
        client.set_model_version_tag(name, version, "macro_f1", f"{scores.macro_f1:.4f}")
        client.set_model_version_tag(name, version, "test_cars_sha256", digest)
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
            log.info("%s version %s is the champion (macro F1 %.3f)", name, version, scores.macro_f1)
        mlflow.set_tag("champion", str(promoted).lower())
    return TrainResult(
        run_id=run.info.run_id, version=version, forest=scores, baselines=baselines, champion_f1=champion_f1,
        promoted=promoted, train_cars=int(frame.loc[~test, "car_id"].nunique()), test_cars=len(test_cars),
        train_windows=int((~test).sum()), test_windows=int(test.sum()), seconds=time.monotonic() - began,
    )  # fmt: skip
