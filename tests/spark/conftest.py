"""One local Spark session for the transform tests (no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings, SparkSettings
from fleetstream.pipeline.session import spark_session


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = spark_session(Settings(spark=SparkSettings(master="local[2]", driver_memory="1g")), "fleetstream-unit")
    yield session
    session.stop()
