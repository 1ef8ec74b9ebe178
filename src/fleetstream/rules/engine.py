"""Declarative alert rules: loaded from YAML, validated, compiled to Spark columns.

A rule is a name, a condition (a Spark SQL boolean expression over silver columns), a severity and
a message. :func:`alerts` turns silver rows into one alert row per rule that fires, with an
``alert_id`` derived from the event and the rule, so a retried write can be deduplicated.

>>> [r.name for r in load_rules()]
['overspeed', 'engine_stress', 'gear_mismatch']
>>> load_rules()[0].condition
'speed > 120.0'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from fleetstream.errors import FleetstreamError
from fleetstream.rules.gear import STOP_KMH
from fleetstream.rules.limits import LIMITS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES = ("low", "medium", "high", "critical")
ALERT_VALUE_COLUMNS = ("speed", "rpm", "gear", "expected_gear", "coolant_temp", "lat", "lon")


@dataclass(frozen=True)
class Rule:
    name: str
    condition: str
    severity: Severity
    message: str


def _parameters() -> dict[str, object]:
    return {**asdict(LIMITS), "stop_kmh": STOP_KMH}


def load_rules(path: Path | None = None) -> list[Rule]:
    """Rules from a YAML file (default: the package's defaults.yaml), thresholds filled in."""
    text = (
        path.read_text(encoding="utf-8")
        if path
        else resources.files("fleetstream.rules").joinpath("defaults.yaml").read_text(encoding="utf-8")
    )
    where = path or "defaults.yaml"
    try:
        document = yaml.safe_load(text)
        raw_rules = document["rules"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise FleetstreamError(f"{where}: not a rules file (expected a top-level 'rules:' list): {exc}") from exc
    rules, seen = [], set()
    for i, raw in enumerate(raw_rules):
        missing = {"name", "condition", "severity", "message"} - set(raw or {})
        if missing:
            raise FleetstreamError(f"{where}: rule #{i + 1} lacks {', '.join(sorted(missing))}")
        if raw["severity"] not in SEVERITIES:
            raise FleetstreamError(
                f"{where}: rule {raw['name']!r} has severity {raw['severity']!r}; use one of {SEVERITIES}"
            )
        if raw["name"] in seen:
            raise FleetstreamError(f"{where}: two rules are named {raw['name']!r}")
        seen.add(raw["name"])
        params = _parameters()
        rules.append(
            Rule(
                raw["name"],
                str(raw["condition"]).format(**params),
                raw["severity"],
                str(raw["message"]).format(**params),
            )
        )
    return rules


def alerts(silver: DataFrame, rules: list[Rule]) -> DataFrame:
    """One row per (event, rule that fires), in a single pass over ``silver``.

    ``detected_at`` is the time each row is computed (:func:`~fleetstream.pipeline.runtime.wall_clock`).
    """
    from pyspark.sql import functions as F

    from fleetstream.pipeline.runtime import wall_clock

    fired = F.array(
        *[
            F.when(
                F.coalesce(F.expr(rule.condition), F.lit(False)),
                F.struct(
                    F.lit(rule.name).alias("rule"),
                    F.lit(rule.severity).alias("severity"),
                    F.lit(rule.message).alias("message"),
                ),
            )
            for rule in rules
        ]
    )
    exploded = silver.withColumn("_fired", F.explode(F.filter(fired, lambda x: x.isNotNull())))
    return exploded.select(
        F.substring(F.sha2(F.concat_ws(":", F.col("event_id"), F.col("_fired.rule")), 256), 1, 32).alias("alert_id"),
        F.col("_fired.rule").alias("rule"),
        F.col("_fired.severity").alias("severity"),
        F.col("_fired.message").alias("message"),
        "event_id",
        "car_id",
        "model",
        "color",
        *ALERT_VALUE_COLUMNS,
        "event_time",
        wall_clock().alias("detected_at"),
    )
