"""fleetstream itself, as the product runs it: ``fleetstream stream`` with every query (bronze,
silver, alerts, gold) and, by default, the alert-data publisher in a Spark application of its own
(``--separate-alert-app``); micro-batch or real-time alerts.

Ready once the lake's queries have finished a batch and an alert has come through alert-data (a
probe report, which the bench's clock leaves out): a real-time query starts at the latest offsets,
so nothing may be produced before it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _first_car(dims: str) -> str:
    """A car of the published reference data (the probe's report must not be an unknown car)."""
    with (Path(dims) / "cars.json").open(encoding="utf-8") as cars:
        return str(json.loads(cars.readline())["car_id"])


def run(mode: str, trigger_s: float | None = None) -> int:
    from fleetstream.bench.common import StreamProcess, probe_until_alert
    from fleetstream.bench.contenders._common import ready, stop_event
    from fleetstream.config import Settings

    settings = Settings()
    stop = stop_event()
    # in this process group: the bench's last resort (killing the contender's group) reaches it
    argv = ["--alerts-mode", mode] + (["--trigger-seconds", f"{trigger_s:g}"] if trigger_s is not None else [])
    stream = StreamProcess(settings, argv, new_session=False)
    code = 0
    try:
        stream.warm({"lake"})
        probe_until_alert(settings, _first_car(settings.lake.dims))
        ready()
        while not stop.wait(0.5):
            stream.check()
    except RuntimeError as exc:
        print(exc, file=sys.stderr, flush=True)
        code = 1
    finally:
        try:
            stream.stop()
        except RuntimeError as exc:
            print(exc, file=sys.stderr, flush=True)
            code = 1
    return code
