"""Live scoring: each closed feature window scored with the registry's champion into ``gold/driver_style``.

The stream's gold roll-up hands the feature windows it has just closed to :class:`Scorer`. The
scorable ones (:func:`fleetstream.ml.features.scorable`) are few (one per car and minute), so they
are collected to the driver and scored there, vectorised (``predict_proba`` on a pandas frame): no
per-row Python, no UDF.

:class:`Champion` holds the model: it asks the registry which version the alias ``champion`` names
at most every ``refresh_s`` seconds and loads a version once, so a new champion is picked up within
a minute and the old one keeps scoring until then. Without a reachable server or a champion the
stream runs on and scores nothing (logged once); MLflow is imported only when a server answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetstream.config import MlflowSettings, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ml.features import FEATURES
from fleetstream.reference.catalog import PROFILES

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
CHAMPION = "champion"
KEYS = ("car_id", "window_start", "window_end", "model", "color")


@dataclass
class Champion:
    """The champion model, reloaded when the alias moves (checked at most every ``refresh_s``)."""

    settings: MlflowSettings
    refresh_s: float = 60.0
    version: str | None = None
    model: Any = None
    _checked: float = field(default=-1e9)
    _said: str = ""

    def current(self) -> tuple[str, Any] | None:
        """(version, model), or None while there is no champion to score with."""
        now = time.monotonic()
        if now - self._checked >= self.refresh_s:
            self._checked = now
            self._refresh()
        return (self.version, self.model) if self.version is not None else None

    def _say(self, message: str) -> None:
        if message != self._said:
            log.info("%s", message)
            self._said = message

    def _refresh(self) -> None:
        from fleetstream.local.mlflow_server import healthy

        uri = self.settings.uri
        if uri.startswith(("http://", "https://")) and not healthy(uri):
            self._say(f"driving style: MLflow at {uri} does not answer; windows are not scored")
            return
        import mlflow.sklearn
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        name = self.settings.model_name
        try:
            version = str(MlflowClient(uri).get_model_version_by_alias(name, CHAMPION).version)
            if version != self.version:
                mlflow.set_tracking_uri(uri)
                self.model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
                self.version = version
                self._say(f"driving style: scoring with {name} version {version} (alias {CHAMPION})")
        except MlflowException as exc:
            self._say(f"driving style: no {CHAMPION} of {name} yet ({type(exc).__name__}); train one with "
                      "`fleetstream ml train`")  # fmt: skip


def score_windows(windows: pd.DataFrame, model: Any, version: str) -> pd.DataFrame:
    """One row per window: the style, each style's probability, the confidence, the model version."""
    import pandas as pd

    probabilities = model.predict_proba(windows[list(FEATURES)].astype("float64"))
    classes = [str(c) for c in model.classes_]
    out = windows[list(KEYS)].reset_index(drop=True)
    out["style"] = [classes[i] for i in probabilities.argmax(axis=1)]
    for profile in PROFILES:
        out[f"p_{profile}"] = probabilities[:, classes.index(profile)] if profile in classes else 0.0
    out["confidence"] = probabilities.max(axis=1)
    out["model_version"] = version
    return pd.DataFrame(out)


@dataclass
class Scorer:
    """What the gold roll-up calls with the feature windows it closed."""

    champion: Champion

    def ready(self) -> bool:
        """Whether there is a champion to score with (asks the registry at most every refresh)."""
        return self.champion.current() is not None

    def __call__(self, closed: DataFrame) -> DataFrame | None:
        """The scores of the scorable windows in ``closed`` as a Spark frame, or None (no champion,
        nothing scorable)."""
        from fleetstream.ml.features import scorable

        current = self.champion.current()
        if current is None:
            return None
        rows: pd.DataFrame = scorable(closed).select(*KEYS, *FEATURES).toPandas()
        if rows.empty:
            return None
        scored = score_windows(rows, current[1], current[0])
        return closed.sparkSession.createDataFrame(scored)


def backfill(settings: Settings, spark: SparkSession) -> tuple[int, str]:
    """Score every scorable window of gold/driving_features that gold/driver_style does not hold yet
    (windows closed before there was a champion, or while MLflow was down) with the champion, in an
    iterator pandas function (``mapInPandas``: the model is shipped once per task, rows go in Arrow
    batches). Returns (windows scored, model version)."""
    from fleetstream.lake.tables import TABLES
    from fleetstream.ml.features import scorable
    from fleetstream.pipeline.writer import CHECKPOINT_INTERVAL, delta_exists

    current = Champion(settings.mlflow).current()
    if current is None:
        raise FleetstreamError(
            f"There is no {CHAMPION} of {settings.mlflow.model_name} at {settings.mlflow.uri} to score with: "
            "train one with `fleetstream ml train` (and check that the server answers). Nothing was scored."
        )
    version, model = current
    root = settings.lake.root.rstrip("/")
    source = f"{root}/gold/driving_features"
    if not delta_exists(spark, source):
        raise FleetstreamError(f"There is no gold/driving_features table under {root}: run the stream first.")
    windows = scorable(spark.read.format("delta").load(source)).select(*KEYS, *FEATURES)
    target = f"{root}/gold/driver_style"
    if delta_exists(spark, target):
        done = spark.read.format("delta").load(target).select("car_id", "window_end")
        windows = windows.join(done, ["car_id", "window_end"], "left_anti")
    schema = ("car_id string, window_start timestamp, window_end timestamp, model string, color string, "
              "style string, " + ", ".join(f"p_{p} double" for p in PROFILES) +
              ", confidence double, model_version string")  # fmt: skip

    def scores(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if len(batch):
                yield score_windows(batch, model, version)

    scored = windows.mapInPandas(scores, schema).localCheckpoint(eager=True)
    count = scored.count()
    if count:
        writer = scored.write.format("delta").mode("append").option("mergeSchema", "true")
        if not delta_exists(spark, target):  # created here: with the table's properties, as the stream would
            writer = writer.options(**TABLES["gold/driver_style"].properties(CHECKPOINT_INTERVAL))
        writer.save(target)
    log.info("scored %d windows with version %s", count, version)
    return count, version
