"""Client configuration: one function per kind of client, every one built from the settings.

Kafka (``KafkaSettings``: the protocol, SASL PLAIN or SCRAM-SHA-256/512, TLS with a CA file and,
optionally, a client certificate):

- :func:`librdkafka`: confluent-kafka's producers, consumers and admin clients (the simulator, the
  dashboard's feeds, notifications, the bench's clocks);
- :func:`spark_kafka`: Spark's Kafka source and sink, in every query (the Java client's names, the
  credentials as a JAAS line, PEM files inline);
- :func:`quix_kafka`: the bench's Quix Streams contender.

S3 (``S3Settings``): :func:`s3_credentials` (configured, or the local server's generated pair),
:func:`s3_client` (boto3), :func:`spark_s3` (Hadoop's s3a) and :func:`delta_rs_s3` (delta-rs).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from fleetstream.config import KafkaSettings, Settings
from fleetstream.errors import FleetstreamError

#: the Java client's login module per SASL mechanism
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetstreamError(f"cannot read the Kafka {what} {path}: {exc.strerror}") from None


def librdkafka(kafka: KafkaSettings) -> dict[str, str]:
    """librdkafka's settings for the cluster (confluent-kafka clients).

    >>> from pydantic import SecretStr
    >>> k = KafkaSettings(bootstrap_servers="b:9096", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...                   sasl_username="fleet", sasl_password=SecretStr("pw"), ssl_ca_file="/ca.pem")
    >>> sorted(librdkafka(k).items())  # doctest: +NORMALIZE_WHITESPACE
    [('bootstrap.servers', 'b:9096'), ('sasl.mechanism', 'SCRAM-SHA-512'), ('sasl.password', 'pw'),
     ('sasl.username', 'fleet'), ('security.protocol', 'SASL_SSL'), ('ssl.ca.location', '/ca.pem'),
     ('ssl.endpoint.identification.algorithm', 'https')]
    """
    conf = {"bootstrap.servers": kafka.bootstrap, "security.protocol": kafka.security_protocol}
    if kafka.sasl:
        conf["sasl.mechanism"] = str(kafka.sasl_mechanism)
        conf["sasl.username"] = str(kafka.sasl_username)
        conf["sasl.password"] = kafka.password()
    if kafka.tls:
        if kafka.ssl_ca_file:
            conf["ssl.ca.location"] = str(kafka.ssl_ca_file)
        if kafka.ssl_cert_file:
            conf["ssl.certificate.location"] = str(kafka.ssl_cert_file)
        if kafka.ssl_key_file:
            conf["ssl.key.location"] = str(kafka.ssl_key_file)
        if kafka.ssl_key_password is not None:
            conf["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
        conf["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else "none"
    return conf


def jaas(kafka: KafkaSettings) -> str:
    """The Java client's ``sasl.jaas.config`` line (quotes and backslashes escaped).

    >>> from pydantic import SecretStr
    >>> print(jaas(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="a",
    ...                          sasl_password=SecretStr('p"w'))))
    org.apache.kafka.common.security.plain.PlainLoginModule required username="a" password="p\\"w";
    """

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    password = kafka.password()
    module = LOGIN_MODULES[str(kafka.sasl_mechanism)]
    return f"{module} required username={quoted(str(kafka.sasl_username))} password={quoted(password)};"


#: Spark's Kafka clients: a request's and an API call's timeouts (see :func:`spark_kafka`)
SPARK_KAFKA_REQUEST_TIMEOUT_MS = 10_000
SPARK_KAFKA_API_TIMEOUT_MS = 20_000


def spark_kafka(kafka: KafkaSettings) -> dict[str, str]:
    """Spark's Kafka source and sink options (``kafka.``-prefixed Java client settings). PEM files
    go inline (``ssl.truststore.certificates``, ``ssl.keystore.key``...), so executors elsewhere
    need no copy of them. The private key must be PKCS#8 (``BEGIN PRIVATE KEY`` or ``BEGIN ENCRYPTED
    PRIVATE KEY``), the only PEM key the Java client reads. Spark's log redaction
    (``spark.redaction.regex``) covers the password settings, not the key's text: keep Spark's
    Kafka debug logging off when a client key is in use."""
    conf = {"kafka.bootstrap.servers": kafka.bootstrap, "kafka.security.protocol": kafka.security_protocol}
    # A broker lost (one node of three, killed): the source's offset lookup on the driver waits for
    # the partition's old leader for the whole API timeout (60 s by default: "Timed out waiting for
    # a node assignment") before Spark tries again with a new client, which sees the new leader.
    # 20 s stalls the stream 20 s; the lookups of a healthy cluster take milliseconds.
    conf["kafka.request.timeout.ms"] = str(SPARK_KAFKA_REQUEST_TIMEOUT_MS)
    conf["kafka.default.api.timeout.ms"] = str(SPARK_KAFKA_API_TIMEOUT_MS)
    if kafka.sasl:
        conf["kafka.sasl.mechanism"] = str(kafka.sasl_mechanism)
        conf["kafka.sasl.jaas.config"] = jaas(kafka)
    if kafka.tls:
        if kafka.ssl_ca_file:
            conf["kafka.ssl.truststore.type"] = "PEM"
            conf["kafka.ssl.truststore.certificates"] = _read(kafka.ssl_ca_file, "CA file")
        if kafka.ssl_cert_file and kafka.ssl_key_file:
            conf["kafka.ssl.keystore.type"] = "PEM"
            conf["kafka.ssl.keystore.certificate.chain"] = _read(kafka.ssl_cert_file, "certificate")
            key = _read(kafka.ssl_key_file, "key")
            if "-----BEGIN PRIVATE KEY-----" not in key and "-----BEGIN ENCRYPTED PRIVATE KEY-----" not in key:
                raise FleetstreamError(
                    f"the Kafka key {kafka.ssl_key_file} is not a PKCS#8 PEM key, the only kind Spark's Kafka client "
                    f"reads; convert it: openssl pkcs8 -topk8 -nocrypt -in {kafka.ssl_key_file} -out key.pk8.pem"
                )
            conf["kafka.ssl.keystore.key"] = key
            if kafka.ssl_key_password is not None:
                conf["kafka.ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
        conf["kafka.ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else ""
    return conf


def quix_kafka(kafka: KafkaSettings) -> Any:
    """Quix Streams' connection (its ``broker_address``): the librdkafka settings, by its names."""
    from quixstreams.kafka.configuration import ConnectionConfig

    return ConnectionConfig.from_librdkafka_dict(librdkafka(kafka))


# --- S3 ------------------------------------------------------------------------------------------


#: the local S3 server's identities besides the admin, and what each may do in the lake's bucket
S3_SERVICE_ACTIONS = {
    "pipeline": ("Read", "Write", "List", "Tagging"),  # the stream writes the lake
    "dashboard": ("Read", "List"),
    "ops": ("Read", "List"),
}


def s3_credentials(settings: Settings, user: str | None = None) -> tuple[SecretStr, SecretStr]:
    """The S3 key pair: from settings; else, for the local server only, the pair of ``user`` (default
    ``s3.user``, else the admin), generated once into the state directory (mode 0600), where the
    local server reads them too."""
    s3 = settings.s3
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        return s3.access_key_id, s3.secret_access_key
    if not s3.managed:
        raise FleetstreamError(
            f"S3 endpoint {s3.endpoint} is configured without credentials. Set FLEETSTREAM_S3__ACCESS_KEY_ID "
            "and FLEETSTREAM_S3__SECRET_ACCESS_KEY (in the environment or .env)."
        )
    from fleetstream.local.seaweedfs import seaweed_dir  # where the local server keeps its state

    user = user or s3.user or "admin"
    if user != "admin" and user not in S3_SERVICE_ACTIONS:
        raise FleetstreamError(
            f"the local S3 server has no identity '{user}' (FLEETSTREAM_S3__USER); it has admin and "
            f"{', '.join(S3_SERVICE_ACTIONS)}"
        )
    name = "credentials.json" if user == "admin" else f"credentials-{user}.json"
    path = seaweed_dir(settings) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pair = {"access_key_id": "fs" + secrets.token_hex(8), "secret_access_key": secrets.token_urlsafe(30)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(pair, handle)
    stored = json.loads(path.read_text(encoding="utf-8"))
    return SecretStr(stored["access_key_id"]), SecretStr(stored["secret_access_key"])


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured endpoint (path-style addressing, short timeouts)."""
    import boto3
    from botocore.config import Config

    key, secret = s3_credentials(settings)
    return boto3.client(
        "s3",
        endpoint_url=settings.s3.endpoint,
        region_name=settings.s3.region,
        aws_access_key_id=key.get_secret_value(),
        aws_secret_access_key=secret.get_secret_value(),
        config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
    )


def spark_s3(settings: Settings) -> dict[str, str]:
    """Hadoop's s3a settings as Spark properties: the endpoint (its keys: :func:`spark_s3_keys`)."""
    return {
        "spark.hadoop.fs.s3a.endpoint": settings.s3.endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3.region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(settings.s3.endpoint.startswith("https")).lower(),
    }


def spark_s3_keys(settings: Settings) -> dict[str, str]:
    """Hadoop's s3a key pair as Spark properties."""
    key, secret = s3_credentials(settings)
    return {"spark.hadoop.fs.s3a.access.key": key.get_secret_value(),
            "spark.hadoop.fs.s3a.secret.key": secret.get_secret_value()}  # fmt: skip


def delta_rs_s3(settings: Settings) -> dict[str, str]:
    """delta-rs's (object_store's) options for the S3 endpoint."""
    key, secret = s3_credentials(settings)
    return {
        "AWS_ENDPOINT_URL": settings.s3.endpoint,
        "AWS_REGION": settings.s3.region,
        "AWS_ACCESS_KEY_ID": key.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": secret.get_secret_value(),
        "AWS_ALLOW_HTTP": str(settings.s3.endpoint.startswith("http://")).lower(),
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        "AWS_FORCE_PATH_STYLE": "true",
    }
