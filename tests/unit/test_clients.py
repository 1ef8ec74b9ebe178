"""One place for client configuration (fleetstream.clients): every kind of Kafka and S3 client gets
the protocol, SASL, TLS and credentials from the settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from fleetstream.clients import (
    librdkafka,
    quix_kafka,
    spark_kafka,
    spark_s3_keys,
)
from fleetstream.config import KafkaSettings, S3Settings, Settings, process_env
from fleetstream.errors import FleetstreamError

CA = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"


def _secure(tmp_path: Path, **extra: object) -> KafkaSettings:
    for name, text in (("ca.pem", CA), ("client.pem", CERT), ("client.key", KEY)):
        (tmp_path / name).write_text(text)
    return KafkaSettings(bootstrap_servers="b-1:9096,b-2:9096", security_protocol="SASL_SSL",
                         sasl_mechanism="SCRAM-SHA-512", sasl_username="fleet", sasl_password=SecretStr("pw"),
                         ssl_ca_file=tmp_path / "ca.pem", ssl_cert_file=tmp_path / "client.pem",
                         ssl_key_file=tmp_path / "client.key", **extra)  # type: ignore[arg-type]  # fmt: skip


def test_every_kafka_client_gets_sasl_and_tls(tmp_path: Path) -> None:
    kafka = _secure(tmp_path, ssl_key_password=SecretStr("kp"), ssl_check_hostname=False)
    assert librdkafka(kafka) == {
        "bootstrap.servers": "b-1:9096,b-2:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fleet",
        "sasl.password": "pw",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "client.pem"),
        "ssl.key.location": str(tmp_path / "client.key"),
        "ssl.key.password": "kp",
        "ssl.endpoint.identification.algorithm": "none",
    }
    spark = spark_kafka(kafka)
    assert spark["kafka.bootstrap.servers"] == "b-1:9096,b-2:9096"
    assert spark["kafka.security.protocol"] == "SASL_SSL"
    assert spark["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert spark["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="fleet" password="pw";'
    )
    assert (spark["kafka.ssl.truststore.type"], spark["kafka.ssl.truststore.certificates"]) == ("PEM", CA)
    assert (spark["kafka.ssl.keystore.type"], spark["kafka.ssl.keystore.certificate.chain"]) == ("PEM", CERT)
    assert (spark["kafka.ssl.keystore.key"], spark["kafka.ssl.key.password"]) == (KEY, "kp")
    assert spark["kafka.ssl.endpoint.identification.algorithm"] == ""
    quix = quix_kafka(kafka)
    assert quix.bootstrap_servers == "b-1:9096,b-2:9096"
    assert (quix.sasl_mechanism, quix.sasl_username) == ("SCRAM-SHA-512", "fleet")
    assert quix.sasl_password.get_secret_value() == "pw"


def test_plaintext_and_plain_sasl() -> None:
    assert librdkafka(KafkaSettings(port=19092)) == {"bootstrap.servers": "127.0.0.1:19092",
                                                     "security.protocol": "PLAINTEXT"}  # fmt: skip
    assert spark_kafka(KafkaSettings(port=19092)) == {"kafka.bootstrap.servers": "127.0.0.1:19092",
                                                      "kafka.security.protocol": "PLAINTEXT",
                                                      "kafka.request.timeout.ms": "10000",
                                                      "kafka.default.api.timeout.ms": "20000"}  # fmt: skip
    plain = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u",
                          sasl_password=SecretStr("p"))  # fmt: skip
    assert spark_kafka(plain)["kafka.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
    )
    assert "ssl.ca.location" not in librdkafka(plain)


def test_incomplete_security_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SASL_SSL needs sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="u")
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI", sasl_username="u",  # type: ignore[arg-type]
                      sasl_password=SecretStr("p"))  # fmt: skip
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(security_protocol="SSL", ssl_cert_file=tmp_path / "c.pem")
    gone = KafkaSettings(security_protocol="SSL", ssl_ca_file=tmp_path / "missing.pem")
    with pytest.raises(FleetstreamError, match=r"cannot read the Kafka CA file .*missing\.pem"):
        spark_kafka(gone)
    secure = _secure(tmp_path)
    (tmp_path / "client.key").write_text("-----BEGIN RSA PRIVATE KEY-----\nKEY\n-----END RSA PRIVATE KEY-----\n")
    assert librdkafka(secure)["ssl.key.location"] == str(tmp_path / "client.key")  # librdkafka reads it
    with pytest.raises(FleetstreamError, match=r"not a PKCS#8 PEM key.*openssl pkcs8 -topk8"):
        spark_kafka(secure)  # Spark's Java client does not


def test_child_processes_get_the_security_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka=_secure(tmp_path), s3=S3Settings(endpoint_url="https://s3.example.com",
                                                               access_key_id=SecretStr("AK"),
                                                               secret_access_key=SecretStr("SK")))  # fmt: skip
    env = process_env(settings, {"PATH": "/bin", "FLEETSTREAM_KAFKA__SASL_PASSWORD": "stale"})
    for key in [k for k in os.environ if k.startswith("FLEETSTREAM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = Settings(_env_file=None)  # type: ignore[call-arg]  # what a child process sees
    assert librdkafka(child.kafka) == librdkafka(settings.kafka)
    assert spark_kafka(child.kafka) == spark_kafka(settings.kafka)
    assert (child.s3.endpoint, spark_s3_keys(child)) == (settings.s3.endpoint, spark_s3_keys(settings))
