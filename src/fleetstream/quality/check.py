"""Checking the lake against its expectation suites (``suites.yaml``, docs/quality.md).

Column expectations (``not_null``, ``in_range``, ``in_set``, and the telemetry contract's ranges)
become one pandera ``DataFrameSchema`` per table, validated with pandera's PySpark API. Expectations
over rows or tables (``unique``, ``references``, ``fresh``, ``row_count``) are Spark aggregates, one
query each. Every expectation gives one :class:`Result`; a run's results are appended to
``gold/dq_results`` and rendered as an HTML report.

>>> suite = parse_suites({"gold/car_state": {"expectations": [{"unique": ["car_id"], "severity": "critical"}]}})
>>> suite["gold/car_state"].expectations[0].name
'unique(car_id)'
>>> parse_suites({"gold/car_state": {"expectations": [{"uniq": ["car_id"]}]}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
fleetstream.errors.FleetstreamError: suites: gold/car_state, expectation 1: unknown kind 'uniq'; use one of ...
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from fleetstream import schema
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.lake.catalog import NAMED, location

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

KINDS = ("not_null", "in_range", "in_set", "unique", "references", "fresh", "row_count")
COLUMN_KINDS = ("not_null", "in_range", "in_set")
RESULTS_TABLE = "gold/dq_results"
BASELINE_RUNS = 24  # row_count compares a slice with the median of this many earlier runs

Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class Expectation:
    kind: str
    args: Any
    severity: Severity = "critical"

    @property
    def name(self) -> str:
        a = self.args
        if self.kind in ("not_null", "unique"):
            return f"{self.kind}({', '.join(a)})"
        if self.kind == "in_range":
            return f"in_range({a['column']}, {a.get('min', '-inf')}, {a.get('max', 'inf')})"
        if self.kind == "in_set":
            return f"in_set({a['column']}, {{{', '.join(map(str, a['values']))}}})"
        if self.kind == "references":
            return f"references({a['column']} -> {a['table']}.{a['key']})"
        if self.kind == "fresh":
            return f"fresh({a['column']}, {a['max_age_s']} s)"
        return f"row_count({a['min_ratio']}x .. {a['max_ratio']}x of the median)"


@dataclass(frozen=True)
class Suite:
    table: str
    slice: str | None
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class Result:
    run_id: str
    run_at: dt.datetime
    table: str
    expectation: str
    severity: str
    passed: bool
    observed: str
    rows: int


@dataclass
class Run:
    run_id: str
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.passed]

    @property
    def critical_failed(self) -> list[Result]:
        return [r for r in self.failed if r.severity == "critical"]


def _contract() -> list[Expectation]:
    """The telemetry contract's completeness and ranges (docs/schema.md), as expectations."""
    out = [Expectation("not_null", tuple(f.name for f in schema.FIELDS if f.required))]
    for f in schema.FIELDS:
        if f.minimum is not None or f.maximum is not None:
            bounds = {k: v for k, v in (("min", f.minimum), ("max", f.maximum)) if v is not None}
            out.append(Expectation("in_range", {"column": f.name, **bounds}))
    return out


def parse_suites(raw: dict[str, Any], where: str = "suites") -> dict[str, Suite]:
    """Suites from their YAML form; an unknown table, kind or key is refused with its place."""
    suites = {}
    for table, body in (raw or {}).items():
        if table not in NAMED:
            raise FleetstreamError(f"{where}: unknown table {table!r}; the lake's tables are {', '.join(NAMED)}")
        unknown = set(body) - {"slice", "contract", "expectations"}
        if unknown:
            raise FleetstreamError(f"{where}: {table}: unknown keys {sorted(unknown)}")
        expectations = _contract() if body.get("contract") else []
        for i, item in enumerate(body.get("expectations") or [], 1):
            place = f"{where}: {table}, expectation {i}"
            kinds = [k for k in item if k != "severity"]
            if len(kinds) != 1 or kinds[0] not in KINDS:
                name = kinds[0] if kinds else None
                raise FleetstreamError(f"{place}: unknown kind {name!r}; use one of {', '.join(KINDS)}")
            severity = item.get("severity", "critical")
            if severity not in ("critical", "warning"):
                raise FleetstreamError(f"{place}: severity {severity!r}; use critical or warning")
            args = item[kinds[0]]
            args = tuple(args) if isinstance(args, list) else args
            expectations.append(Expectation(kinds[0], args, severity))
        suites[table] = Suite(table, body.get("slice"), tuple(expectations))
    return suites


def load_suites(path: Path | None = None) -> dict[str, Suite]:
    """The suites of ``path``, or the built-in ``suites.yaml``."""
    if path is None:
        text = resources.files("fleetstream.quality").joinpath("suites.yaml").read_text(encoding="utf-8")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FleetstreamError(f"cannot read the suites file {path}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetstreamError(f"{path or 'suites.yaml'} is not valid YAML: {exc}") from exc
    return parse_suites(raw, str(path or "suites.yaml"))


# --- checking ----------------------------------------------------------------------------------


def _pandera_schema(expectations: Iterable[Expectation], frame: DataFrame) -> Any:
    """One pandera schema of the column expectations (columns absent from the frame are left to
    ``_missing``)."""
    import pandera.pyspark as pa

    types = dict(frame.dtypes)
    checks: dict[str, list[Any]] = {}
    nullable: dict[str, bool] = {}
    for e in expectations:
        if e.kind == "not_null":
            for column in e.args:
                nullable[column] = False
        elif e.kind == "in_range":
            lo, hi = e.args.get("min"), e.args.get("max")
            if lo is not None and hi is not None:
                check = pa.Check.in_range(lo, hi)
            elif lo is not None:
                check = pa.Check.ge(lo)
            else:
                check = pa.Check.le(hi)
            checks.setdefault(e.args["column"], []).append(check)
        elif e.kind == "in_set":
            checks.setdefault(e.args["column"], []).append(pa.Check.isin(list(e.args["values"])))
    columns = {  # each column with its own type: pandera's Spark checks compare it with the frame's
        name: pa.Column(frame.schema[name].dataType, checks=checks.get(name, []), nullable=nullable.get(name, True))  # type: ignore[arg-type]
        for name in {*checks, *nullable}
        if name in types
    }
    return pa.DataFrameSchema(columns, strict=False)


#: pandera's names of the checks each column expectation becomes
_PANDERA_CHECKS = {"in_range": ("in_range", "greater_than", "less_than"), "in_set": ("isin",)}


def _column_results(expectations: list[Expectation], frame: DataFrame) -> list[str | None]:
    """Each column expectation's failure (pandera's message), or None when it holds, in order."""
    errors = dict(_pandera_schema(expectations, frame).validate(frame).pandera.errors)
    messages = [(e.get("column"), e.get("check"), e.get("error")) for kinds in errors.values()
                for entries in kinds.values() for e in entries]  # fmt: skip
    types = dict(frame.dtypes)
    out: list[str | None] = []
    for e in expectations:
        columns = list(e.args) if e.kind == "not_null" else [e.args["column"]]
        missing = [c for c in columns if c not in types]
        if missing:
            out.append(f"no column {', '.join(missing)}")
            continue
        failed = any(
            column in columns
            and (check == "not_nullable" if e.kind == "not_null" else str(check).startswith(_PANDERA_CHECKS[e.kind]))
            for column, check, _ in messages
        )
        out.append(_violations(e, frame) if failed else None)
    return out


def _violations(e: Expectation, frame: DataFrame) -> str | None:
    """What a failed column expectation found: the rows that break it, counted (one pass, only
    after pandera has found a failure of its kind on its column). None when no row breaks this one:
    pandera names a column and a kind of check, so of two ranges on one column only one may fail."""
    from pyspark.sql import functions as F

    if e.kind == "not_null":
        counts = frame.agg(*(F.count_if(F.col(c).isNull()).alias(c) for c in e.args)).first()
        assert counts is not None
        return ", ".join(f"{counts[c]:,} null {c}" for c in e.args if counts[c]) or None
    column = F.col(e.args["column"])
    if e.kind == "in_range":
        lo, hi = e.args.get("min"), e.args.get("max")
        outside = F.lit(False)
        if lo is not None:
            outside = outside | (column < lo)
        if hi is not None:
            outside = outside | (column > hi)
        what = f"{e.args['column']} outside {lo if lo is not None else '-inf'} .. {hi if hi is not None else 'inf'}"
    else:
        outside = ~column.isin(list(e.args["values"]))
        what = f"{e.args['column']} not in the set"
    found = frame.agg(F.count_if(outside).alias("n"), F.min(column).alias("lo"), F.max(column).alias("hi")).first()
    assert found is not None
    if not found["n"]:
        return None
    return f"{found['n']:,} rows with {what} (values from {found['lo']} to {found['hi']})"


def _row_result(
    spark: SparkSession, settings: Settings, e: Expectation, frame: DataFrame, rows: int, history: list[int]
) -> str | None:
    from pyspark.sql import functions as F

    if e.kind == "unique":
        distinct = frame.select(*e.args).distinct().count()
        return None if distinct == rows else f"{rows - distinct:,} rows repeat another's {', '.join(e.args)}"
    if e.kind == "references":
        from fleetstream.pipeline.writer import delta_exists

        column, table, key = e.args["column"], e.args["table"], e.args["key"]
        if not delta_exists(spark, location(settings, table)):
            return f"{table} is not in the lake (`fleetstream reference publish` writes it)"
        dims = spark.read.format("delta").load(location(settings, table)).select(F.col(key).alias("_k"))
        values = frame.select(F.col(column).alias("_k")).where(F.col("_k").isNotNull()).distinct()
        orphans = values.join(dims, "_k", "left_anti").limit(1000).collect()
        if not orphans:
            return None
        sample = ", ".join(str(r["_k"]) for r in orphans[:3])
        more = "+" if len(orphans) == 1000 else ""
        return f"{len(orphans):,}{more} {column} values not in {table} (e.g. {sample})"
    if e.kind == "fresh":
        column, max_age = e.args["column"], float(e.args["max_age_s"])
        kind = dict(frame.dtypes).get(column)
        newest_col = F.max(F.col(column)) if kind == "bigint" else F.max(F.unix_millis(F.col(column)))
        newest = frame.agg(newest_col.alias("n")).first()
        if newest is None or newest["n"] is None:
            return "no rows"
        age = time.time() - newest["n"] / 1000
        return None if age <= max_age else f"newest {column} is {age:,.0f} s old (at most {max_age:,.0f} s)"
    if e.kind == "row_count":
        if len(history) < 3:
            return None  # no baseline yet: the first runs pass and make one
        median = statistics.median(history)
        lo, hi = median * float(e.args["min_ratio"]), median * float(e.args["max_ratio"])
        if lo <= rows <= hi:
            return None
        allowed = f"allowed {lo:,.0f} .. {hi:,.0f}"
        return f"{rows:,} rows; the median of the last {len(history)} runs is {median:,.0f} ({allowed})"
    raise AssertionError(e.kind)


def _history(spark: SparkSession, settings: Settings, table: str) -> list[int]:
    """The rows checked by the last runs of ``table``'s row_count expectation that passed."""
    from pyspark.sql import functions as F

    from fleetstream.pipeline.writer import delta_exists

    path = location(settings, RESULTS_TABLE)
    if not delta_exists(spark, path):
        return []
    rows = (
        spark.read.format("delta").load(path)
        .where((F.col("table_name") == table) & F.col("expectation").startswith("row_count") & F.col("passed"))
        .orderBy(F.col("run_at").desc()).limit(BASELINE_RUNS).select("rows").collect()
    )  # fmt: skip
    return [int(r["rows"]) for r in rows]


def check(
    spark: SparkSession,
    settings: Settings,
    suites: dict[str, Suite],
    since: dt.timedelta | None = None,
    tables: list[str] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Run:
    """Check each suite's table (its slice of the last ``since``, or all of it) and return the results."""
    from pyspark.sql import functions as F

    from fleetstream.pipeline.writer import delta_exists

    run = Run(uuid.uuid4().hex[:12])
    run_at = dt.datetime.now(dt.UTC)
    chosen = tables or list(suites)
    unknown = [t for t in chosen if t not in suites]
    if unknown:
        raise FleetstreamError(f"no suite for {unknown}; the suites cover {', '.join(suites)}")
    for table in chosen:
        suite = suites[table]
        path = location(settings, table)
        if not delta_exists(spark, path):
            say(f"{table}: not in the lake yet, skipped")
            continue
        frame = spark.read.format("delta").load(path)
        if since is not None and suite.slice is not None:
            column = F.col(suite.slice)
            start = run_at - since
            millis = F.lit(int(start.timestamp() * 1000))
            bound = millis if dict(frame.dtypes).get(suite.slice) == "bigint" else F.timestamp_millis(millis)
            frame = frame.where(column >= bound)
        frame = frame.cache()
        try:
            rows = frame.count()
            columnar = [e for e in suite.expectations if e.kind in COLUMN_KINDS]
            column_failures = iter(_column_results(columnar, frame) if columnar else [])
            history = _history(spark, settings, table)
            failures = [
                next(column_failures)
                if e.kind in COLUMN_KINDS
                else _row_result(spark, settings, e, frame, rows, history)
                for e in suite.expectations
            ]
        finally:
            frame.unpersist()
        for e, failure in zip(suite.expectations, failures, strict=True):
            run.results.append(
                Result(run.run_id, run_at, table, e.name, e.severity, failure is None, failure or "ok", rows)
            )
        bad = [r for r in run.results if r.table == table and not r.passed]
        say(f"{table}: {rows:,} rows, {len(suite.expectations) - len(bad)}/{len(suite.expectations)} expectations hold")
    return run


def write_results(spark: SparkSession, settings: Settings, run: Run) -> None:
    """Append the run's results to gold/dq_results."""
    from fleetstream.lake.tables import TABLES
    from fleetstream.pipeline.writer import CHECKPOINT_INTERVAL, delta_exists

    if not run.results:
        return
    path = location(settings, RESULTS_TABLE)
    frame = spark.createDataFrame(
        [(r.run_id, r.run_at, r.table, r.expectation, r.severity, r.passed, r.observed, r.rows) for r in run.results],
        "run_id STRING, run_at TIMESTAMP, table_name STRING, expectation STRING, severity STRING, passed BOOLEAN, "
        "observed STRING, rows LONG",
    )
    writer = frame.coalesce(1).write.format("delta").mode("append")
    if not delta_exists(spark, path):
        writer = writer.options(**TABLES[RESULTS_TABLE].properties(CHECKPOINT_INTERVAL))
    writer.save(path)
