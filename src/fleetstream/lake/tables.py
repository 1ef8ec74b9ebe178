"""The lake's tables: one definition of each (name, partitioning, the columns it keeps statistics
on, how it is written), shared by the pipeline's writer, the readers and docs/operations.md.

Delta keeps min/max statistics for the first 32 columns of every file it writes by default; each
table here names the columns its readers filter on instead (``delta.dataSkippingStatsColumns``), so
that a write computes a few statistics, not 32 (docs/benchmarks.md measures the commit).

>>> TABLES["silver/telemetry"].partition
'event_date'
>>> TABLES["gold/car_state"].mode
'overwrite'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    partition: str | None = None
    stats: tuple[str, ...] = ()
    #: append: every batch adds rows; overwrite: every batch replaces the table (small tables);
    #: merge: rows upserted by ``key`` (a row per entity that changes: episodes, trips); pending:
    #: batches add rows to their writer's partition (``partition`` holds the writer's name), which
    #: is emptied once they are upserted (never compacted: the writer empties it)
    mode: Literal["append", "overwrite", "merge", "pending"] = "append"
    key: str | None = None
    #: columns readers filter on together: `fleetstream lake maintain` Z-orders each closed day by them
    zorder: tuple[str, ...] = ()
    #: merge: the ``status`` that ends a row (an ended row is not replaced by one as new that is not)
    done: str | None = None

    def properties(self, checkpoint_interval: int) -> dict[str, str]:
        """Delta table properties set when the table is created."""
        props = {"delta.checkpointInterval": str(checkpoint_interval)}
        if self.stats:
            props["delta.dataSkippingStatsColumns"] = ",".join(self.stats)
        return props


TABLES = {
    t.name: t
    for t in (
        Table("bronze/telemetry", "every Kafka record as received: bytes, key, coordinates",
              "ingest_date", ("kafka_ts", "kafka_partition", "kafka_offset", "ingest_time")),
        Table("silver/telemetry", "valid, enriched, first copies of each event", "event_date",
              ("event_ts", "event_time", "car_id", "silver_batch"), zorder=("car_id", "event_ts")),
        Table("quarantine/telemetry", "rejected records with a reason code", "quarantine_date",
              ("ingest_time", "reason", "car_id")),
        Table("silver/duplicates", "later copies of events silver already holds", None, ("ingest_time", "car_id")),
        Table("silver/alerts", "one row per (event, rule that fired)", None, ("event_time", "car_id", "rule")),
        Table("silver/alert_episodes", "one row per alert episode (car, rule): opened, resolved, peaks; "
              "upserted by episode_id", None, ("car_id", "rule", "started_at", "status"), "merge", "episode_id",
              done="resolved"),
        Table("gold/trips", "one row per trip (engine on to engine off): start and end, distance, speeds, "
              "fuel, harsh events, episodes; upserted by trip_id", None, ("car_id", "started_at", "status"),
              "merge", "trip_id", done="closed"),
        Table("silver/pending_upserts", "the episode steps and trip updates each stateful query has not "
              "upserted into silver/alert_episodes and gold/trips yet (the newest per episode and trip): "
              "read with them, upserted at the next start", "query", (), "pending"),
        Table("gold/car_minutes", "per car and event-time minute: partial aggregates, one row per batch "
              "(sum them; gold/* windows roll up from here)", None, ("minute", "car_id")),
        Table("gold/car_state", "each car's latest report", None, ("car_id", "event_time"), "overwrite"),
        Table("gold/speed_by_model", "15-minute windows sliding every minute: speed per model, closed windows",
              None, ("window_start", "window_end")),
        Table("gold/cars_by_color", "15-minute windows sliding every minute: cars per color, closed windows",
              None, ("window_start", "window_end")),
        Table("gold/alerts_per_minute", "1-minute windows: alerts per rule, color and model, closed windows",
              None, ("window_start", "window_end")),
        Table("gold/driving_features", "5-minute windows ending every minute: driving features per car "
              "(docs/ml.md), closed windows", None, ("window_end", "car_id")),
        Table("gold/driver_style", "the champion model's driving style for each scorable feature window: "
              "style, probabilities, confidence, model version", None, ("window_end", "car_id")),
        Table("gold/maintenance", "one row per car: wear per 1,000 km, km and days to each service threshold, "
              "fuel per 100 km by driving style (docs/ml.md); rewritten every few minutes", None, ("car_id",),
              "overwrite"),
        Table("gold/overheat_warnings", "the reports on which a car was warned of overheating: coolant trend and "
              "seconds to the limit (docs/ml.md)", None, ("event_time", "car_id")),
        Table("gold/episodes_per_minute", "1-minute windows: alert episodes opened and resolved per rule, "
              "color and model; partial counts, one row per batch (sum them)", None, ("window_start", "rule")),
        Table("gold/dq_results", "one row per expectation and data-quality run (`fleetstream quality check`, "
              "docs/quality.md): passed, what was observed", None, ("run_at", "table_name")),
    )
}  # fmt: skip


#: The reference data as lake tables, rewritten whole by `fleetstream reference publish` (the
#: pipeline itself reads the JSON lines published beside them).
DIM_TABLES = {
    t.name: t
    for t in (
        Table("dims/car_models", "car models: make, model, limits (max speed, red line), specifications",
              mode="overwrite"),
        Table("dims/car_colors", "car colors: id, name, hex", mode="overwrite"),
        Table("dims/cars", "the fleet: car id, model, color, driver profile, year", mode="overwrite"),
    )
}  # fmt: skip
