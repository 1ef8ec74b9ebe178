"""Spark Structured Streaming: the session factory, the run plan and the medallion's layers.

The defaults below are shared by `fleetstream stream`, the pipeline and the benchmarks (this module
imports nothing, so the command line reads them without starting Spark). docs/operations.md says
how the lake's adaptive batches work and docs/benchmarks.md how the defaults were chosen.
"""

#: how late an event may come, in seconds: later ones are quarantined (``too_late``), and gold's
#: windows close this long after they end
DEFAULT_MAX_LATENESS_S = 600
#: how often the lake queries look for new input, in seconds
LAKE_TRIGGER_S = 2.0
#: a Kafka lake batch starts as soon as this many records wait...
LAKE_MIN_RECORDS = 20_000
#: ...or once this many seconds have passed since the last batch started (a quiet fleet's freshness)
LAKE_MAX_DELAY_S = 5.0
#: while the lake's batches are small (a quiet fleet), gold is updated at most this often, in seconds
LAKE_GOLD_S = 20.0
#: a live lake closes gold's windows (the fleet's 15-minute windows, alerts per minute, the driving
#: features) once this many minutes of them are due, in one roll-up: each roll-up reads
#: gold/car_minutes and commits every roll-up table (a catch-up run closes all it can at once)
LAKE_ROLLUP_MIN = 1
#: a live lake closes and scores the driving-feature windows (gold/driving_features,
#: gold/driver_style) once this many minutes of them are due, in a roll-up with the fleet windows:
#: 5 does the ML's per-minute work (the windows' read, the scoring, two commits) a fifth as often,
#: each window scored up to 4 minutes later, after the 10 minutes of lateness every gold window
#: waits (with it, the ML tables cost a quiet fleet no measurable CPU, docs/ml.md "Cost"; the
#: cadence's own saving is not measured); a catch-up run closes all it can at once
FEATURES_EVERY_MIN = 5
#: Kafka records per lake batch at most: bounds a batch's memory when a backlog drains
LAKE_MAX_RECORDS = 250_000
#: the alert-data publisher's mode: "realtime" (Spark's real-time mode) or "microbatch"
ALERTS_MODE = "realtime"
#: the micro-batch alert-data publisher's interval, in seconds (a longer batch is followed at once)
ALERTS_TRIGGER_S = 0.1
#: a real-time publisher batch's length, in seconds: offsets are checkpointed at its end
REALTIME_BATCH_S = 300.0
#: the lake application's CPU priority beside a publisher of its own: the lowest, so that the cores
#: go to the publisher whenever it has work (docs/benchmarks.md compares 10 and 19)
LAKE_NICE = 19
#: how often the stateful query (episodes) looks for new silver rows, in seconds: each
#: batch has a fixed cost (Python workers, state commits, upserts), measured in docs/benchmarks.md
EPISODES_TRIGGER_S = 15.0
#: silver/alert_episodes and gold/trips are upserted at most this often, in seconds (each upsert is a
#: Delta MERGE, about 1.2 s of CPU); in between, their rows wait in silver/pending_upserts
EPISODES_PROGRESS_S = 60.0
#: the stateful query's state partitions (fixed in its checkpoint at its first start)
EPISODE_PARTITIONS = 1
#: a car that stopped reporting this long opens a vehicle_offline episode, in seconds
OFFLINE_AFTER_S = 30.0
