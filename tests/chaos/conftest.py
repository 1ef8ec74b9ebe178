"""What the chaos tests share: their figures, printed (`pytest -s`) and, when
``FLEETSTREAM_CHAOS_REPORT`` names a file (`make chaos`), recorded there for docs/reliability.md's
table (``python -m fleetstream.testing reliability``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest


@pytest.fixture
def figures() -> Callable[[str, str], None]:
    """``figures(key, text)``: a fault's figures, in the words of the table's cell ``key``."""

    def record(key: str, text: str) -> None:
        print(f"{key}: {text}")
        if path := os.environ.get("FLEETSTREAM_CHAOS_REPORT"):
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"key": key, "text": text}) + "\n")

    return record
