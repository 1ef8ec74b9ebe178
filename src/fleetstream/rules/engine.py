"""Declarative alert rules: loaded from YAML, validated, compiled to Spark columns.

A rule is a name, a condition (a Spark SQL boolean expression over silver columns), a severity and
a message, and its lifecycle (:class:`Lifecycle`): how long the condition must hold before an
episode opens, how long it must be clear before the episode resolves, and when an open episode is
notified again or escalated. :func:`alerts` turns silver rows into one alert row per rule that
fires (the per-event alerts), with an ``alert_id`` derived from the event and the rule, so a
retried write can be deduplicated; :mod:`fleetstream.rules.lifecycle` turns them into episodes.

>>> [r.name for r in load_rules()]
['overspeed', 'zone_overspeed', 'engine_stress', 'gear_mismatch', 'overheat', 'sensor_fault']
>>> load_rules()[0].condition
'speed > 120.0'
>>> load_rules()[4].lifecycle.for_s, load_rules()[4].per_event
(10.0, False)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from fleetstream.errors import FleetstreamError
from fleetstream.rules.gear import STOP_KMH
from fleetstream.rules.limits import LIMITS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES = ("low", "medium", "high", "critical")
ALERT_VALUE_COLUMNS = ("speed", "rpm", "gear", "expected_gear", "coolant_temp", "lat", "lon", "zone_id", "zone_limit")


#: the keys a rule may have (anything else is refused, naming the rule and the key)
RULE_KEYS = ("name", "condition", "severity", "message", "per_event", "for", "clear_for", "clear_condition",
             "repeat_every", "escalate", "unchanged")  # fmt: skip
#: an episode resolves once the condition has been clear this long, unless the rule says otherwise
DEFAULT_CLEAR_FOR_S = 10.0
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(value: object) -> float:
    """A duration in seconds from ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"`` or a number of seconds.

    >>> duration_s("2m"), duration_s(15), duration_s("500ms")
    (120.0, 15.0, 0.5)
    >>> duration_s("soon")
    Traceback (most recent call last):
    ...
    ValueError: 'soon' is not a duration (write 500ms, 30s, 2m or 1h)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (write 500ms, 30s, 2m or 1h)")
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    found = _DURATION.match(str(value))
    if not found:
        raise ValueError(f"{value!r} is not a duration (write 500ms, 30s, 2m or 1h)")
    return float(found["n"]) * _UNIT_S[found["unit"]]


@dataclass(frozen=True)
class Escalation:
    """An open episode's severity becomes ``severity`` once it has been open ``after_s`` seconds."""

    after_s: float
    severity: Severity


@dataclass(frozen=True)
class Lifecycle:
    """When a rule's episodes open, resolve, repeat and escalate (event time; docs/rules.md)."""

    for_s: float = 0.0  # the condition must hold this long before an episode opens
    clear_for_s: float = DEFAULT_CLEAR_FOR_S  # ...and be clear this long before it resolves
    clear_condition: str | None = None  # what "clear" means, when it is not "the condition is false"
    repeat_every_s: float | None = None  # an open episode is notified again this often
    escalate: tuple[Escalation, ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    condition: str
    severity: Severity
    message: str
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    #: whether every event that breaks the rule is an alert of its own (silver/alerts, alert-data);
    #: a rule that is only worth an episode (a slow overheat) says false
    per_event: bool = True
    #: a reading (silver column) the rule watches for a frozen sensor: it fires at an event where
    #: its condition holds and this reading equals the car's previous report's (episodes only)
    unchanged: str | None = None

    @property
    def clear_expression(self) -> str:
        """The Spark SQL condition under which the rule counts as clear (a rule that watches an
        ``unchanged`` reading is clear where it does not fire)."""
        return self.lifecycle.clear_condition or f"NOT ({self.condition})"


#: the most rules a file may hold: the episodes query carries each event's rules as bits in a double,
#: exact up to 2**53 (:func:`fleetstream.pipeline.episodes.episode_input`)
MAX_RULES = 53


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
    if isinstance(raw_rules, list) and len(raw_rules) > MAX_RULES:
        raise FleetstreamError(f"{where}: {len(raw_rules)} rules; a rules file holds at most {MAX_RULES}")
    rules, seen = [], set()
    for i, raw in enumerate(raw_rules):
        rule = _rule(raw, i, str(where))
        if rule.name in seen:
            raise FleetstreamError(f"{where}: two rules are named {rule.name!r}")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def _rule(raw: object, index: int, where: str) -> Rule:
    """One rule from its YAML mapping; an error names the rule and the key."""
    if not isinstance(raw, dict):
        raise FleetstreamError(f"{where}: rule #{index + 1} is not a mapping of keys to values")
    label = f"rule {raw['name']!r}" if "name" in raw else f"rule #{index + 1}"
    missing = {"name", "condition", "severity", "message"} - set(raw)
    if missing:
        raise FleetstreamError(f"{where}: {label} lacks {', '.join(sorted(missing))}")
    unknown = sorted(set(raw) - set(RULE_KEYS))
    if unknown:
        raise FleetstreamError(
            f"{where}: {label} has unknown key {unknown[0]!r}; a rule's keys are {', '.join(RULE_KEYS)}"
        )

    def severity(value: object, key: str) -> Severity:
        if value not in SEVERITIES:
            raise FleetstreamError(f"{where}: {label} has {key} {value!r}; use one of {SEVERITIES}")
        return value  # type: ignore[return-value]

    def seconds(key: str, value: object) -> float:
        try:
            return duration_s(value)
        except ValueError as exc:
            raise FleetstreamError(f"{where}: {label}, key {key!r}: {exc}") from None

    params = _parameters()
    escalate = []
    for step in raw.get("escalate") or []:
        if not isinstance(step, dict) or set(step) != {"after", "severity"}:
            raise FleetstreamError(
                f"{where}: {label}, key 'escalate': each step is {{after: <duration>, severity: <level>}}"
            )
        escalate.append(Escalation(seconds("escalate", step["after"]), severity(step["severity"], "escalate severity")))
    if [e.after_s for e in escalate] != sorted(e.after_s for e in escalate):
        raise FleetstreamError(f"{where}: {label}, key 'escalate': steps must come in the order of their 'after'")
    per_event = raw.get("per_event", True)
    if not isinstance(per_event, bool):
        raise FleetstreamError(f"{where}: {label}, key 'per_event': write true or false")
    clear = raw.get("clear_condition")
    lifecycle = Lifecycle(
        for_s=seconds("for", raw.get("for", 0)),
        clear_for_s=seconds("clear_for", raw.get("clear_for", DEFAULT_CLEAR_FOR_S)),
        clear_condition=None if clear is None else str(clear).format(**params),
        repeat_every_s=None if raw.get("repeat_every") is None else seconds("repeat_every", raw["repeat_every"]),
        escalate=tuple(escalate),
    )
    if lifecycle.repeat_every_s == 0:
        raise FleetstreamError(f"{where}: {label}, key 'repeat_every': must be longer than 0 s")
    unchanged = raw.get("unchanged")
    if unchanged is not None:
        if not isinstance(unchanged, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", unchanged):
            raise FleetstreamError(f"{where}: {label}, key 'unchanged': name one silver column (e.g. oil_temp)")
        if per_event or clear is not None:
            raise FleetstreamError(
                f"{where}: {label}, key 'unchanged': such a rule raises episodes only (per_event: false) and is "
                "clear where the reading changes (no clear_condition)"
            )
    return Rule(
        str(raw["name"]),
        str(raw["condition"]).format(**params),
        severity(raw["severity"], "severity"),
        str(raw["message"]).format(**params),
        lifecycle,
        per_event,
        unchanged,
    )


def check_rules(spark: SparkSession, rules: list[Rule], columns: StructType, where: str = "rules") -> None:
    """Refuse a rule whose condition or clear condition does not compile over ``columns`` (the silver
    schema): Spark analyses each on an empty frame, before any query starts."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    empty = spark.createDataFrame([], columns)
    for rule in rules:
        if rule.unchanged is not None and rule.unchanged not in columns.fieldNames():
            raise FleetstreamError(
                f"{where}: rule {rule.name!r}, key 'unchanged': {rule.unchanged!r} is not a silver column"
            )
        for key, text in (("condition", rule.condition), ("clear_condition", rule.lifecycle.clear_condition)):
            if text is None:
                continue
            try:
                empty.select(F.expr(text).cast("boolean")).schema  # noqa: B018 (analysis only)
            except PySparkException as exc:
                first = str(exc).strip().splitlines()[0]
                raise FleetstreamError(f"{where}: rule {rule.name!r}, key {key!r} does not compile: {first}") from None


def _fired(rules: list[Rule]) -> Column:
    """For a silver row: an array of (rule, severity, message) of each per-event rule that fires on
    it (null where one does not)."""
    from pyspark.sql import functions as F

    return F.array(
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
            if rule.per_event
        ]
    )


def fires(rules: list[Rule]) -> Column:
    """For a silver row: whether :func:`alerts` makes an alert of it (a boolean column: a small
    batch's driver learns it with the batch's keys, and skips the alerts' job when none fires)."""
    from pyspark.sql import functions as F

    return F.exists(_fired(rules), lambda x: x.isNotNull())


def alerts(silver: DataFrame, rules: list[Rule]) -> DataFrame:
    """One row per (event, rule that fires), in a single pass over ``silver`` (the rules whose every
    event is an alert: ``per_event``).

    ``detected_at`` is the time each row is computed (:func:`~fleetstream.pipeline.runtime.wall_clock`).
    """
    from pyspark.sql import functions as F

    from fleetstream.pipeline.runtime import wall_clock

    fired = _fired(rules)
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
        *[c for c in ALERT_VALUE_COLUMNS if c in silver.columns],  # (a frame without zones: the seed-style bench)
        "event_time",
        wall_clock().alias("detected_at"),
    )
