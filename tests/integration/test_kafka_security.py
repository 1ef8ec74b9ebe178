"""The secure local broker (`up --secure`, the session's stack): SASL_SSL with SCRAM users, TLS with
the generated CA, ACLs per service; refusals name their cause, and no secret leaks into outputs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from pydantic import SecretStr

from fleetstream.config import Settings, process_env, settings_env
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import broker_count, consume, make_consumer, require_kafka
from fleetstream.ingest.sinks import KafkaSink
from fleetstream.local import kafka_security

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")


def _send(settings: Settings, user: str, topic: str) -> dict[str, int]:
    """Produce one record as ``user``; the delivery errors by reason (empty when it was delivered)."""
    sink = KafkaSink(settings.kafka.as_user(user), topic)
    sink.send([b"car-001"], [b"{}"])
    sink.close(timeout=15)
    assert sink.stats.delivered + sink.stats.failed == 1
    return sink.errors


def test_the_broker_takes_only_sasl_ssl_with_the_generated_ca(stack_settings: Settings) -> None:
    kafka = stack_settings.kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert kafka.sasl_username == "admin"
    assert broker_count(kafka) == 1
    plaintext = kafka.model_copy(update={"security_protocol": "PLAINTEXT", "secure": False})
    assert broker_count(plaintext, timeout=3) == 0
    props = (stack_settings.state_dir / "kafka" / "server.properties").read_text()
    assert "PLAINTEXT://" not in props
    assert "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL" in props
    for private in [stack_settings.state_dir / "kafka" / "server.properties",
                    *(stack_settings.state_dir / "kafka" / "users").iterdir(),
                    *(stack_settings.state_dir / "kafka" / "tls").glob("broker.p12*")]:  # fmt: skip
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private


def test_a_wrong_password_is_refused_with_its_cause(stack_settings: Settings, tmp_path: Path) -> None:
    wrong = stack_settings.kafka.model_copy(update={"sasl_password": SecretStr("not-it"), "sasl_password_file": None})
    with pytest.raises(FleetstreamError, match=r"refused user 'admin'.*invalid credentials.*SASL_PASSWORD"):
        require_kafka(wrong, timeout=5)
    env = {**process_env(stack_settings, os.environ), "FLEETSTREAM_KAFKA__SASL_PASSWORD": "not-it",
           "FLEETSTREAM_STATE_DIR": str(tmp_path)}  # fmt: skip
    env.pop("FLEETSTREAM_KAFKA__SASL_PASSWORD_FILE")
    done = subprocess.run([FLEETSTREAM, "simulate", "--cars", "1", "--duration", "1", "--fast"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "refused user 'admin'" in said, said
    assert "invalid credentials" in said
    assert "not-it" not in done.stdout + done.stderr


def test_an_untrusted_certificate_fails_the_handshake_with_its_cause(stack_settings: Settings, tmp_path: Path) -> None:
    other_ca, _, _ = kafka_security.ensure_tls(tmp_path)  # a CA the broker's certificate does not chain to
    kafka = stack_settings.kafka.model_copy(update={"ssl_ca_file": other_ca})
    with pytest.raises(FleetstreamError, match=r"TLS handshake .* failed.*certificate verify failed.*SSL_CA_FILE"):
        require_kafka(kafka, timeout=5)


def test_acls_hold_each_service_to_its_own_topics(stack_settings: Settings) -> None:
    topics = stack_settings.kafka.topics
    assert _send(stack_settings, "simulator", topics.sensors) == {}
    assert _send(stack_settings, "dashboard", topics.commands) == {}
    [refused] = _send(stack_settings, "simulator", topics.alerts)  # the simulator may not raise alerts
    assert "Topic authorization failed" in refused
    assert "user 'simulator' has no WRITE permission" in refused
    assert _send(stack_settings, "dashboard", topics.sensors) != {}  # nor may the dashboard forge telemetry
    # reading: the pipeline may read the telemetry; the simulator may not
    reader = make_consumer(stack_settings.kafka.as_user("pipeline"), f"fleetstream-t-{uuid.uuid4().hex[:8]}")
    reader.subscribe([topics.sensors])
    try:
        assert len(consume(reader, 1, timeout=30)) == 1
    finally:
        reader.close()
    snoop = make_consumer(stack_settings.kafka.as_user("simulator"), f"fleetstream-t-{uuid.uuid4().hex[:8]}")
    snoop.subscribe([topics.sensors])
    try:
        message = snoop.poll(15)
        assert message is not None
        assert message.error() is not None
        assert message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        snoop.close()


def test_no_secret_appears_in_logs_status_or_config(stack_settings: Settings, tmp_path: Path) -> None:
    secrets = [p.read_text().strip() for p in (stack_settings.state_dir / "kafka" / "users").iterdir()]
    secrets.append((stack_settings.state_dir / "kafka" / "tls" / "broker.p12.password").read_text().strip())
    env = settings_env(stack_settings, os.environ)  # the stack's own settings, as `fleetstream up` had them
    outputs = {
        command: subprocess.run(
            [FLEETSTREAM, *command.split()],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=tmp_path,
        )
        for command in ("config", "status", "status --json")
    }
    texts = {f"`fleetstream {c}`": r.stdout + r.stderr for c, r in outputs.items()}
    assert "SASL_SSL" in texts["`fleetstream config`"]
    texts |= {str(p): p.read_text(errors="replace") for p in stack_settings.state_dir.rglob("*.log")}
    assert any("kafka.log" in name for name in texts)
    leaks = [name for name, text in texts.items() for secret in secrets if secret in text]
    assert leaks == []


def test_storage_format_takes_the_scram_passwords_from_a_private_file(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`StorageTool format --add-scram` (the real tool): the passwords reach it in a mode-0600 `java
    @file`, never on the command line that every local user can list, and the file is gone after."""
    from fleetstream.local import kafka_broker

    settings = stack_settings.model_copy(update={"state_dir": tmp_path / "state"})
    assert settings.kafka.secure
    calls: list[tuple[list[str], str, int]] = []
    real_run = subprocess.run

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if "kafka" in " ".join(map(str, argv)):  # (not finding java: `java -version`)
            argfile = Path(argv[-1][1:])
            calls.append((list(argv), argfile.read_text(), stat.S_IMODE(argfile.stat().st_mode)))
        return real_run(argv, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(kafka_broker.subprocess, "run", run)
    kafka_broker.prepare(settings)
    assert (kafka_broker.broker_dir(settings) / "data" / "meta.properties").exists()  # formatted
    [(argv, text, mode)] = calls
    passwords = kafka_security.ensure_users(settings.state_dir).values()
    assert passwords
    assert not any(p in arg for p in passwords for arg in argv)
    assert all(f"password={p}]" in text for p in passwords)
    assert "kafka.tools.StorageTool" in text
    assert mode == 0o600
    assert not Path(argv[-1][1:]).exists()
