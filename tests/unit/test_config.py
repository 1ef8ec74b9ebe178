from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetstream.cli import app
from fleetstream.clients import librdkafka, spark_kafka
from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees only the FLEETSTREAM_* variables it sets, and a .env of its own."""
    for name in [n for n in __import__("os").environ if n.startswith("FLEETSTREAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_run_a_local_broker() -> None:
    settings = Settings()
    assert settings.kafka.managed
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.kafka.topics.all() == [
        "sensors-sample", "samples-enriched", "alert-data", "sensors-dlq", "driver-commands",
    ]  # fmt: skip
    assert settings.s3.managed
    assert settings.state_dir == Path.cwd() / ".fleetstream"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__TOPICS__ALERTS", "fleet-alerts")
    monkeypatch.setenv("FLEETSTREAM_STATE_DIR", "/var/lib/fleetstream")
    settings = Settings()
    assert not settings.kafka.managed
    assert settings.kafka.bootstrap == "broker-1:9092,broker-2:9092"
    assert settings.kafka.partitions == 12
    assert settings.kafka.topics.alerts == "fleet-alerts"
    assert settings.kafka.topics.sensors == "sensors-sample"
    assert settings.state_dir == Path("/var/lib/fleetstream")


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text(
        "FLEETSTREAM_S3__ENDPOINT_URL=http://s3.internal:9000\nFLEETSTREAM_S3__BUCKET=from-dotenv\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("FLEETSTREAM_S3__BUCKET", "from-env")
    settings = Settings()
    assert settings.s3.endpoint == "http://s3.internal:9000"
    assert not settings.s3.managed
    assert settings.s3.bucket == "from-env"


@pytest.mark.parametrize(
    "command", [["config"], ["jars", "fetch"], ["status"], ["down"], ["up"], ["stream"], ["lake", "repair"]]
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    """Every command says which setting is wrong and exits 1, before it starts anything (no traceback)."""
    monkeypatch.setenv("FLEETSTREAM_KAFKA__PORT", "70000")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "Invalid FLEETSTREAM_* setting: kafka.port" in " ".join(result.output.split())
    assert not isinstance(result.exception, FleetstreamError), result.exception  # shown as an error, not raised


def test_secrets_never_shown(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FLEETSTREAM_S3__SECRET_ACCESS_KEY", "s3-very-secret")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SASL_USERNAME", "fleet")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SASL_PASSWORD", "kafka-very-secret")
    settings = Settings()
    assert settings.s3.secret_access_key is not None
    assert settings.s3.secret_access_key.get_secret_value() == "s3-very-secret"
    with caplog.at_level(logging.INFO):
        logging.getLogger("fleetstream.test").info("settings: %s %r", settings, settings)
    shown = repr(settings) + str(settings) + caplog.text + settings.model_dump_json()
    assert "s3-very-secret" not in shown
    assert "kafka-very-secret" not in shown
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0
    assert "**********" in result.output
    assert "very-secret" not in result.output
    # The secret does reach the places that need it: the Kafka clients' configuration.
    assert librdkafka(settings.kafka)["sasl.password"] == "kafka-very-secret"
    assert 'password="kafka-very-secret"' in spark_kafka(settings.kafka)["kafka.sasl.jaas.config"]


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka.port = 1  # type: ignore[misc]


def test_extra_spark_properties_come_from_a_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetstream.pipeline.session import session_conf

    monkeypatch.setenv(
        "FLEETSTREAM_SPARK__CONF", '{"spark.sql.shuffle.partitions": "200", "spark.executor.memory": "8g"}'
    )
    conf = session_conf(Settings())
    assert conf["spark.sql.shuffle.partitions"] == "200"  # over fleetstream's default of 4
    assert conf["spark.executor.memory"] == "8g"
    assert conf["spark.sql.session.timeZone"] == "UTC"  # the other defaults stay


def test_settings_env_gives_a_child_the_same_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What Airflow's tasks get: every setting, the .env's too, read back equal from the environment
    alone (a task runs in a folder of its own, where no .env is)."""
    from fleetstream.config import settings_env

    (tmp_path / ".env").write_text(
        "FLEETSTREAM_TELEGRAM__TOKEN=123:abc\nFLEETSTREAM_TELEGRAM__CHAT_IDS=[5, 6]\n"
        "FLEETSTREAM_KAFKA__SECURITY_PROTOCOL=SASL_SSL\nFLEETSTREAM_KAFKA__SASL_MECHANISM=SCRAM-SHA-512\n"
        "FLEETSTREAM_KAFKA__SASL_USERNAME=fleet\nFLEETSTREAM_KAFKA__SASL_PASSWORD=pw\n"
        'FLEETSTREAM_SPARK__CONF={"spark.ui.enabled": "false"}\nFLEETSTREAM_QUALITY__HOLD_GOLD=true\n'
    )
    monkeypatch.setenv("FLEETSTREAM_LAKE__ROOT", str(tmp_path / "lake"))
    parent = Settings()
    env = settings_env(parent, {"PATH": "/bin", "FLEETSTREAM_STALE": "x"})
    assert "FLEETSTREAM_STALE" not in env
    assert env["PATH"] == "/bin"
    (tmp_path / ".env").unlink()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == parent


def test_secure_local_broker_settings_name_the_service_user_and_its_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """FLEETSTREAM_KAFKA__SECURE=true: SASL_SSL with SCRAM-SHA-512 as admin (or the user set), the
    password read from that user's generated file, the generated CA; children get the same."""
    monkeypatch.setenv("FLEETSTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SECURE", "true")
    kafka = Settings().kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert kafka.sasl_username == "admin"
    assert kafka.ssl_ca_file == tmp_path / "kafka" / "tls" / "ca.pem"
    (tmp_path / "kafka" / "users").mkdir(parents=True)
    (tmp_path / "kafka" / "users" / "simulator").write_text("s3cret\n")
    simulator = kafka.as_user("simulator")
    assert librdkafka(simulator)["sasl.username"] == "simulator"
    assert librdkafka(simulator)["sasl.password"] == "s3cret"
    with pytest.raises(FleetstreamError, match=r"password file .*admin.*fleetstream up --secure"):
        librdkafka(kafka)  # no broker was ever started here: the file is missing, and the error says so
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SASL_USERNAME", "simulator")
    assert Settings().kafka == simulator


def test_secure_is_refused_for_an_external_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSTREAM_KAFKA__SECURE", "true")
    monkeypatch.setenv("FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9096")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 1
    assert "secures the local broker" in " ".join(result.output.split())


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    """`fleetstream --help`, `status` and every other command load the CLI first: it imports no
    data library (NumPy and Polars took a second of each command's start), each command its own."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, fleetstream.cli; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert not {"numpy", "polars", "pandas", "pyarrow", "pyspark", "streamlit", "mlflow", "airflow"} & set(loaded)
