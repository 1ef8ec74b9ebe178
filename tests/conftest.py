"""Shared fixtures: one local stack per test session, started by the same code as `fleetstream up`."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import KafkaSettings, S3Settings, Settings, SparkSettings
from fleetstream.ingest.kafka import ensure_topics
from fleetstream.local import stack
from fleetstream.pipeline.session import spark_session
from fleetstream.testing import free_port_base, reset_spark_gateway


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """After a test whose timeout cut a call into the JVM short (which leaves this process's py4j
    connection reading the late answers of earlier calls), the next modules get a Spark driver of
    their own. (The rest of the module keeps the session its fixture made, now stopped.)"""
    report = yield
    failed = call.excinfo
    if (
        failed is not None
        and "Timeout (>" in str(failed.value)
        and any("py4j" in str(e.path) for e in failed.traceback)
    ):
        try:
            reset_spark_gateway()
        except Exception as exc:  # (never the test run's own error)
            print(f"the Spark driver could not be reset after the timeout: {exc!r}")
    return report


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running local stack (Kafka + SeaweedFS) on free ports, stopped at the end of the session.

    Its broker is the secure one (`up --secure`): every test that uses it reaches Kafka through
    SASL_SSL with SCRAM and TLS, as the admin user, with clients built by ``fleetstream.clients``."""
    kafka_port = free_port_base(2)
    s3_port = free_port_base(5, grpc_offset=10000)
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("stack"),
        kafka=KafkaSettings(port=kafka_port, controller_port=kafka_port + 1, secure=True),
        s3=S3Settings(port=s3_port, bucket="fleetstream-test"),
    )
    stack.up(settings, with_s3=True)
    try:
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture
def new_topic(stack_settings: Settings) -> Callable[..., str]:
    """Create a uuid-named topic on the session broker and return its name."""

    def _create(partitions: int = 4) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        ensure_topics(stack_settings.kafka, [name], partitions=partitions)
        return name

    return _create


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _spark_stopped_at_end() -> Iterator[None]:
    yield
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.fixture(scope="module")
def spark(_spark_stopped_at_end: None) -> SparkSession:
    """The local Spark session for a module whose tests run Spark in this process: the one running,
    or a new one when none runs (a module may stop the session it got, as test_spark_jars does)."""
    return spark_session(Settings(spark=SparkSettings(master="local[2]", driver_memory="1g")), "fleetstream-unit")


@pytest.fixture
def figures() -> Callable[[str, str], None]:
    """``figures(key, text)``: a chaos test's figures, in the words of docs/reliability.md's cell
    ``key``: printed (`pytest -s`) and, when ``FLEETSTREAM_CHAOS_REPORT`` names a file (`make chaos`),
    recorded there for the table (``python -m fleetstream.testing reliability``)."""

    def record(key: str, text: str) -> None:
        print(f"{key}: {text}")
        if path := os.environ.get("FLEETSTREAM_CHAOS_REPORT"):
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"key": key, "text": text}) + "\n")

    return record
