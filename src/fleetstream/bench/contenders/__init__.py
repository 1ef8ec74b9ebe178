"""The systems `fleetstream bench compare` sets side by side, each a process of its own.

Every contender reads the telemetry topic from its beginning, enriches it with the same reference
data, applies the same three rules and writes one JSON alert per (event, rule) to the alert topic
(``event_id``, ``rule`` and the producer's ``event_time`` in ms are what the bench reads). They take
their topics, broker and lake from the usual ``FLEETSTREAM_*`` settings, print ``READY`` on stdout
once they consume, and stop cleanly on SIGTERM or SIGINT.

- ``fleetstream-microbatch`` / ``fleetstream-realtime``: the product's own pipeline (every query:
  bronze, silver, alerts, gold), as ``fleetstream stream`` runs it.
- ``seed-style``: the seeds' design, three Spark applications chained through Kafka
  (``seed-enrich``, ``seed-detect``, ``seed-aggregate``).
- ``quix``: a Quix Streams application, what a Python developer would write instead.

Run one by hand: ``python -m fleetstream.bench.contenders quix``.
"""

from __future__ import annotations

#: system name -> the processes (``python -m fleetstream.bench.contenders <process>``) that make it up
SYSTEMS: dict[str, tuple[str, ...]] = {
    "fleetstream-microbatch": ("fleetstream-microbatch",),
    "fleetstream-realtime": ("fleetstream-realtime",),
    "seed-style": ("seed-enrich", "seed-detect", "seed-aggregate"),
    "quix": ("quix",),
}
