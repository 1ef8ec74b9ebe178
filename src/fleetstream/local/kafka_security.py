"""The secure local broker's credentials and rules (`fleetstream up --secure`).

- **TLS**: a CA and the broker's certificate (names ``localhost`` and ``127.0.0.1``) generated once
  under ``<state_dir>/kafka/tls``; clients trust ``ca.pem``. The broker's key and certificate are in
  a PKCS#12 keystore whose password is a file beside it (mode 0600).
- **Users**: one SCRAM-SHA-512 user per service, each password generated once into
  ``<state_dir>/kafka/users/<user>`` (mode 0600) and created in the broker's metadata when its
  storage is formatted (``kafka-storage format --add-scram``).
- **ACLs** (StandardAuthorizer, deny by default): :func:`access` below; ``admin`` is the super user
  (the CLI, the stack's set-up, tests and benchmarks).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterable
from pathlib import Path

from fleetstream.config import KAFKA_ADMIN, KAFKA_TLS_DIR, KAFKA_USERS_DIR, KafkaSettings, TopicNames
from fleetstream.local.process import write_private

#: the broker's certificate subject; its principal on the controller listener (mutual TLS)
BROKER_PRINCIPAL = "User:CN=fleetstream-broker"
#: every service's user, created when the storage is formatted
USERS = (KAFKA_ADMIN, "simulator", "pipeline", "dashboard", "ops")
#: consumer groups the services may use: their own names start with these
GROUP_PREFIXES = ("fleetstream-", "spark-kafka-")


def access(topics: TopicNames) -> dict[str, dict[str, list[str]]]:
    """Which user may read and write which topic (the admin may do anything).

    >>> access(TopicNames())["simulator"]
    {'read': ['driver-commands'], 'write': ['sensors-sample']}
    """
    return {
        "simulator": {"read": [topics.commands], "write": [topics.sensors]},
        "pipeline": {
            "read": [topics.sensors, topics.commands],
            "write": [topics.enriched, topics.alerts, topics.dlq],
        },
        "dashboard": {"read": [topics.sensors, topics.enriched, topics.alerts, topics.dlq], "write": [topics.commands]},
        "ops": {"read": [topics.alerts, topics.enriched], "write": []},
    }


def tls_dir(state_dir: Path) -> Path:
    return state_dir / KAFKA_TLS_DIR


def users_dir(state_dir: Path) -> Path:
    return state_dir / KAFKA_USERS_DIR


def ensure_users(state_dir: Path) -> dict[str, str]:
    """Every service user's password (generated once; hex, so no quoting anywhere)."""
    passwords = {}
    for user in USERS:
        path = users_dir(state_dir) / user
        if not path.exists():
            write_private(path, secrets.token_hex(24).encode())
        passwords[user] = path.read_text(encoding="utf-8").strip()
    return passwords


def ensure_tls(state_dir: Path) -> tuple[Path, Path, Path]:
    """The CA file, the broker's PKCS#12 keystore and its password file (generated once)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    home = tls_dir(state_dir)
    ca_file, keystore, password_file = home / "ca.pem", home / "broker.p12", home / "broker.p12.password"
    if ca_file.exists() and keystore.exists() and password_file.exists():
        return ca_file, keystore, password_file
    now = dt.datetime.now(dt.UTC)
    until = now + dt.timedelta(days=825)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("fleetstream local CA")).issuer_name(name("fleetstream local CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name(BROKER_PRINCIPAL.removeprefix("User:CN=")))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    password = secrets.token_hex(16)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )
    home.mkdir(parents=True, exist_ok=True)
    write_private(password_file, password.encode())
    write_private(keystore, pkcs12.serialize_key_and_certificates(b"broker", key, cert, [ca], encryption))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))  # public: clients need it
    return ca_file, keystore, password_file


def server_properties(state_dir: Path, port: int, controller_port: int, host: str) -> dict[str, str]:
    """The broker's settings for SASL_SSL clients, a mutual-TLS controller listener and ACLs."""
    ca_file, keystore, password_file = ensure_tls(state_dir)
    admin_password = ensure_users(state_dir)[KAFKA_ADMIN]
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    return {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            f'{scram} required username="{KAFKA_ADMIN}" password="{admin_password}";',
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": password_file.read_text(encoding="utf-8").strip(),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file),
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{KAFKA_ADMIN};{BROKER_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
    }  # fmt: skip


def scram_arguments(state_dir: Path) -> list[str]:
    """`kafka-storage format` arguments that create every user."""
    return [f"--add-scram=SCRAM-SHA-512=[name={user},password={password}]"
            for user, password in ensure_users(state_dir).items()]  # fmt: skip


def acl_bindings(topics: TopicNames) -> Iterable[object]:
    """Every ACL of :func:`access`, as confluent-kafka bindings (read implies describe)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    def allow(kind: ResourceType, name: str, user: str, operation: AclOperation,
              pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> AclBinding:  # fmt: skip
        return AclBinding(kind, name, pattern, f"User:{user}", "*", operation, AclPermissionType.ALLOW)

    for user, rights in access(topics).items():
        for topic in rights["read"]:
            yield allow(ResourceType.TOPIC, topic, user, AclOperation.READ)
        for topic in rights["write"]:
            yield allow(ResourceType.TOPIC, topic, user, AclOperation.WRITE)
            yield allow(ResourceType.TOPIC, topic, user, AclOperation.DESCRIBE)
        for prefix in GROUP_PREFIXES:
            yield allow(ResourceType.GROUP, prefix, user, AclOperation.READ, ResourcePatternType.PREFIXED)


def apply_acls(kafka: KafkaSettings) -> int:
    """Create the ACLs (as the admin; creating one that exists changes nothing); return how many."""
    from fleetstream.ingest.kafka import make_admin

    bindings = list(acl_bindings(kafka.topics))
    admin = make_admin(kafka)  # held: the futures fail if the client is collected first
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result()
    return len(bindings)
