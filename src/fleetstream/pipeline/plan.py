"""The run plan: which queries an application runs and where alert-data is published from, decided
once from `fleetstream stream`'s options (pure: no Spark, no I/O).

The lake's layers are computed in as few queries as there are sources: one query reads Kafka and
computes bronze and everything derived from it in the same micro-batch; a layer whose input layer
runs elsewhere reads that layer's Delta table instead (``--only silver`` reads bronze/telemetry,
``--only alerts,gold`` reads silver/telemetry), which is how a layer scales out to an application
of its own.

>>> p = plan(["bronze", "silver", "alerts", "gold"], alerts_mode="realtime", separate=True)
>>> [(q.name, q.source) for q in p.lake], p.publisher
([('lake', 'kafka')], 'child')
>>> [(q.name, q.source) for q in plan(["bronze", "alerts"], "microbatch", separate=False).lake]
[('bronze', 'kafka'), ('alerts', 'silver/telemetry')]

Alert episodes (``episodes``: the rules' episodes, offline cars, trips) are stateful: they run as
a query of their own over silver's table, whichever other layers run beside them. ``offline``, a
query of its own before, is a name for it still.

>>> [(q.name, q.source) for q in plan([*LAYERS, *STATEFUL], "realtime", separate=True).lake]
[('lake', 'kafka'), ('episodes', 'silver/telemetry')]
>>> [q.name for q in plan(["bronze", "silver", "offline"], "realtime", separate=True, available_now=True).lake]
['bronze+silver', 'episodes']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleetstream.errors import FleetstreamError

LAYERS = ("bronze", "silver", "alerts", "gold")
#: layers on Spark's state: each a query of its own (a foreachBatch cannot hold streaming state)
STATEFUL = ("episodes",)
#: earlier queries' names, and the query that does their work now
ALIASES = {"offline": "episodes"}
PUBLISHER = "alert-data"  # the alert-data publisher alone, in `--only`
ALERT_MODES = ("microbatch", "realtime")
#: each layer's input: Kafka for bronze, else the layer it is derived from
PARENT = {"bronze": None, "silver": "bronze", "alerts": "silver", "gold": "silver", "episodes": "silver"}
#: the Delta table a layer writes that its children read when they run in another query
LAYER_TABLE = {"bronze": "bronze/telemetry", "silver": "silver/telemetry"}

Placement = Literal["none", "here", "child"]


@dataclass(frozen=True)
class LakeQuery:
    """One streaming query of the lake: its layers, computed in one micro-batch from one source."""

    layers: tuple[str, ...]

    @property
    def source(self) -> str:
        """``kafka``, or the Delta table the first layer's input layer writes."""
        parent = PARENT[self.layers[0]]
        return "kafka" if parent is None else LAYER_TABLE[parent]

    @property
    def stateful(self) -> bool:
        """A query on Spark's state (alert episodes), not a lake batch."""
        return self.layers[0] in STATEFUL

    @property
    def name(self) -> str:
        """The query's name (status file, checkpoint): ``lake`` for the whole medallion.

        >>> LakeQuery(("silver", "alerts")).name
        'silver+alerts'
        """
        return "lake" if self.layers == LAYERS else "+".join(self.layers)


@dataclass(frozen=True)
class RunPlan:
    lake: tuple[LakeQuery, ...]
    #: where the alert-data publisher (Kafka -> Kafka, the latency path) runs: not at all, in this
    #: application, or in a child application of its own
    publisher: Placement
    alerts_mode: str
    available_now: bool = False
    #: the lake batches write samples-enriched and sensors-dlq (a replay writes Kafka only when asked)
    publish: bool = True
    #: gold also holds the ML tables: driving features, their live scores, maintenance, overheat warnings
    ml: bool = True

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(layer for query in self.lake for layer in query.layers)

    @property
    def alerts_in_batch(self) -> bool:
        """Whether the lake batches publish alert-data themselves: in catch-up runs (available-now,
        replay), where no live publisher runs; a live stream publishes from the publisher query."""
        return self.available_now and self.publish and "alerts" in self.layers


def lake_queries(layers: Iterable[str]) -> tuple[LakeQuery, ...]:
    """The chosen layers grouped by source: a layer joins the query that computes its input layer,
    or the query that reads the same table, or starts a query of its own."""
    chosen = [layer for layer in LAYERS if layer in set(layers)]
    groups: list[list[str]] = []
    for layer in chosen:
        parent = PARENT[layer]
        home = next((g for g in groups if parent in g), None) or next(
            (g for g in groups if LakeQuery((g[0],)).source == LakeQuery((layer,)).source), None
        )
        if home is None:
            groups.append([layer])
        else:
            home.append(layer)
    groups += [[layer] for layer in STATEFUL if layer in set(layers)]
    return tuple(LakeQuery(tuple(g)) for g in groups)


def plan(
    only: Iterable[str],
    alerts_mode: str,
    separate: bool,
    available_now: bool = False,
    publish: bool = True,
    ml: bool = True,
) -> RunPlan:
    """The plan for ``--only`` (layers and/or ``alert-data``), the alerts mode, whether the publisher
    runs in an application of its own, whether this is a catch-up run, and whether gold holds the ML
    tables.

    >>> plan(["alert-data"], "microbatch", separate=True).publisher
    'here'
    >>> plan(["bronze", "silver", "alerts"], "microbatch", separate=False).publisher
    'here'
    >>> plan(["bronze", "silver", "alerts"], "realtime", separate=True, available_now=True).alerts_in_batch
    True
    """
    chosen = {ALIASES.get(name, name) for name in only}
    names = [*LAYERS, *STATEFUL, PUBLISHER]
    unknown = sorted(chosen - set(names))
    if unknown:
        raise FleetstreamError(f"unknown queries {unknown}; choose from {', '.join(names)}")
    if not chosen:
        raise FleetstreamError(f"no query chosen; choose from {', '.join(names)}")
    if alerts_mode not in ALERT_MODES:
        raise FleetstreamError(f"alerts mode {alerts_mode!r}: choose {' or '.join(ALERT_MODES)}")
    if available_now and PUBLISHER in chosen:
        raise FleetstreamError(
            f"{PUBLISHER} is a live publisher; with --available-now, the lake's batches publish the alerts"
        )
    publisher: Placement = "none"
    if PUBLISHER in chosen:
        publisher = "here"
    elif "alerts" in chosen and not available_now:
        publisher = "child" if separate else "here"
    return RunPlan(lake_queries(chosen), publisher, alerts_mode, available_now, publish, ml)
