"""Spark Structured Streaming: the session factory and the medallion queries.

The defaults below are shared by `fleetstream stream`, the pipeline and the benchmarks (this module
imports nothing, so the command line reads them without starting Spark).
"""

#: the lake queries' micro-batch interval (bronze, silver, gold), in seconds
LAKE_TRIGGER_S = 2.0
#: the micro-batch alert-data publisher's interval, in seconds (a longer batch is followed at once)
ALERTS_TRIGGER_S = 0.1
#: the lake application's CPU priority beside a publisher of its own: the lowest, so that the cores
#: go to the publisher whenever it has work (docs/benchmarks.md compares 10 and 19)
LAKE_NICE = 19
