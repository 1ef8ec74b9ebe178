"""The step log of a micro-batch: each step's wall time and the driver JVM's CPU time over it.

Logged at debug level (``fleetstream -v stream``): where a quiet fleet's CPU goes, batch by batch
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def jvm_pid(spark: SparkSession) -> int | None:
    """The driver JVM's process id when this process started it (pyspark's gateway), else None."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    return getattr(proc, "pid", None)


def process_cpu_s(pid: int | None) -> float | None:
    """A process's CPU time so far (user and system), in seconds, from ``/proc``; None when unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StepClock:
    """Durations of the steps of one micro-batch, logged at debug level (``fleetstream -v stream``),
    with the driver JVM's CPU time over each step when ``jvm_pid`` is given (every thread of the JVM:
    other queries' work at the same time is counted too)."""

    def __init__(self, what: str, jvm_pid: int | None = None, since: tuple[float, float | None] | None = None) -> None:
        """``since``: when the last batch's clock ended and the CPU time then (``ended``): the time
        between the two batches (the query's own work: offsets, its logs) is the first step."""
        self.what, self.last = what, time.perf_counter()
        self.pid = jvm_pid if log.isEnabledFor(logging.DEBUG) else None
        self.cpu = process_cpu_s(self.pid)
        self.steps: list[tuple[str, float, float | None]] = []
        if since is not None:
            used = self.cpu - since[1] if self.cpu is not None and since[1] is not None else None
            self.steps.append(("since the last batch", self.last - since[0], used))

    @property
    def ended(self) -> tuple[float, float | None]:
        return self.last, self.cpu

    def mark(self, step: str) -> None:
        now, cpu = time.perf_counter(), process_cpu_s(self.pid)
        used = cpu - self.cpu if cpu is not None and self.cpu is not None else None
        self.steps.append((step, now - self.last, used))
        self.last, self.cpu = now, cpu

    def log(self) -> None:
        log.debug(
            "%s: %s",
            self.what,
            ", ".join(
                f"{name} {seconds:.2f} s" + (f" (JVM CPU {cpu:.2f} s)" if cpu is not None else "")
                for name, seconds, cpu in self.steps
            ),
        )
