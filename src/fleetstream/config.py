"""Settings: one frozen model per external system, read from the environment and `.env`.

Every variable starts with ``FLEETSTREAM_``; nested keys use ``__``, for example
``FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker-1:9092``. The environment is read here and in
:mod:`fleetstream.cli` only; the rest of the code receives a :class:`Settings` object.

>>> Settings(kafka=KafkaSettings(port=19092)).kafka.bootstrap
'127.0.0.1:19092'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetstream.errors import FleetstreamError

ENV_PREFIX = "FLEETSTREAM_"
LOCAL_HOST = "127.0.0.1"


class _Frozen(BaseModel):
    # hide_input_in_errors: a refused model would otherwise print its input, secrets included
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class TopicNames(_Frozen):
    """Names of the Kafka topics the platform uses (the product's interface: keep the defaults)."""

    sensors: str = "sensors-sample"
    enriched: str = "samples-enriched"
    alerts: str = "alert-data"
    dlq: str = "sensors-dlq"
    commands: str = "driver-commands"

    def all(self) -> list[str]:
        """Every topic name, in a stable order."""
        return [self.sensors, self.enriched, self.alerts, self.dlq, self.commands]

    def tagged(self, suffix: str, prefix: str = "") -> TopicNames:
        """The same topics renamed ``<prefix><name>-<suffix>``: a private set for a test or a benchmark.

        >>> TopicNames().tagged("x1", "bench-").alerts
        'bench-alert-data-x1'
        """
        return TopicNames(**{k: f"{prefix}{v}-{suffix}" for k, v in self.model_dump().items()})


class KafkaSettings(_Frozen):
    """The event bus: the local broker that `fleetstream up` runs, or any Kafka cluster.

    Leave ``bootstrap_servers`` unset to use the local broker; set it to use an existing cluster,
    in which case `fleetstream up` starts no broker and only checks that the cluster answers.
    """

    bootstrap_servers: str | None = None
    port: int = Field(9092, ge=1, le=65535, description="local broker: client listener port")
    controller_port: int = Field(9093, ge=1, le=65535, description="local broker: KRaft controller port")
    heap: str = Field("512m", pattern=r"^\d+[kmgKMG]$", description="local broker: JVM heap (-Xms/-Xmx)")
    partitions: int = Field(4, ge=1, description="partitions of each topic `up` creates")
    replication_factor: int = Field(1, ge=1, description="replicas of each topic `up` creates (local cluster: up to 3)")
    brokers: int = Field(
        1,
        ge=1,
        le=5,
        description="local broker: nodes of the KRaft cluster `up` starts (each broker and controller; node i "
        "listens on port+2(i-1) and controller_port+2(i-1)); with 3, topics get 3 replicas and "
        "min.insync.replicas 2",
    )
    retention_bytes: int = Field(1 << 30, ge=1 << 20, description="local broker: bytes kept per partition")
    topics: TopicNames = TopicNames()
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(None, description="a file holding the SASL password (instead of it)")
    ssl_ca_file: Path | None = Field(None, description="PEM file of the CA(s) the brokers' certificates chain to")
    ssl_cert_file: Path | None = Field(None, description="PEM client certificate (brokers that require one)")
    ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate")
    ssl_key_password: SecretStr | None = Field(None, description="the private key's password, when encrypted")
    ssl_check_hostname: bool = Field(True, description="check the broker's name against its certificate")
    secure: bool = Field(
        False,
        description="local broker: SASL_SSL only (SCRAM-SHA-512 users, TLS with a generated CA) and ACLs; "
        "clients use sasl_username (default admin) with its generated password",
    )

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        password = self.sasl_password is not None or self.sasl_password_file is not None
        if self.sasl and not (self.sasl_mechanism and self.sasl_username and password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism (PLAIN, SCRAM-SHA-256 or "
                "SCRAM-SHA-512), sasl_username and sasl_password (or sasl_password_file)"
            )
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise ValueError("ssl_cert_file and ssl_key_file go together (a client certificate and its key)")
        return self

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def password(self) -> str:
        """The SASL password: set, or read from ``sasl_password_file``."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is None:
            return ""
        try:
            return self.sasl_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            hint = " Start the secure local broker first: `fleetstream up --secure`." if self.secure else ""
            raise FleetstreamError(
                f"cannot read the Kafka password file {self.sasl_password_file}: {exc.strerror}.{hint}"
            ) from None

    def as_user(self, user: str) -> KafkaSettings:
        """The same cluster as another of the secure local broker's users (its generated password)."""
        if not (self.secure and self.sasl_password_file is not None):
            return self
        return self.model_copy(update={"sasl_username": user,
                                        "sasl_password_file": self.sasl_password_file.with_name(user)})  # fmt: skip

    @property
    def managed(self) -> bool:
        """True when fleetstream runs the broker itself."""
        return self.bootstrap_servers is None

    @model_validator(mode="after")
    def _cluster_replication(self) -> KafkaSettings:
        """A local cluster of several nodes replicates its topics (3 copies at most) unless told otherwise."""
        if self.brokers > 1 and "replication_factor" not in self.model_fields_set:
            self.__dict__["replication_factor"] = min(3, self.brokers)
        if self.managed and self.replication_factor > self.brokers:
            raise ValueError(
                f"replication_factor {self.replication_factor} needs as many brokers; the local cluster has "
                f"{self.brokers} (FLEETSTREAM_KAFKA__BROKERS, `fleetstream up --brokers N`)"
            )
        return self

    def node_ports(self, node: int) -> tuple[int, int]:
        """The client and controller ports of the local cluster's node ``node`` (1, 2, ...).

        >>> KafkaSettings(port=9092, controller_port=9093, brokers=3).node_ports(3)
        (9096, 9097)
        """
        return self.port + 2 * (node - 1), self.controller_port + 2 * (node - 1)

    @property
    def min_insync(self) -> int:
        """min.insync.replicas of the local cluster: 2 once there are 3 copies (one node may fail).

        >>> KafkaSettings().min_insync, KafkaSettings(brokers=3).min_insync
        (1, 2)
        """
        return 2 if self.replication_factor >= 3 else 1

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients connect to (every node of a local cluster).

        >>> KafkaSettings(port=9092, brokers=3).bootstrap
        '127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096'
        """
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return ",".join(f"{LOCAL_HOST}:{self.node_ports(n)[0]}" for n in range(1, self.brokers + 1))


class S3Settings(_Frozen):
    """The object store: local SeaweedFS (`fleetstream up --s3`) or any S3-compatible endpoint.

    Leave ``endpoint_url`` unset to use the local SeaweedFS server. Its credentials, when not set
    here, are generated on first start and kept in the state directory (mode 0600).
    """

    endpoint_url: str | None = None
    port: int = Field(8333, ge=1, le=65535, description="local SeaweedFS: S3 port (it also uses port+1..+4)")
    bucket: str = "fleetstream"
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    user: str | None = Field(
        None, description="local SeaweedFS: the service identity whose generated keys to use (default: admin)"
    )

    @property
    def managed(self) -> bool:
        """True when fleetstream runs the S3 server itself."""
        return self.endpoint_url is None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL clients use."""
        return self.endpoint_url or f"http://{LOCAL_HOST}:{self.port}"


class SparkSettings(_Frozen):
    """Spark: local mode by default; any master URL (spark://, yarn, k8s://) by configuration; or a
    local standalone cluster (`fleetstream up --spark-workers N`), which the commands then use."""

    master: str = "local[*]"
    driver_memory: str = "2g"
    workers: int = Field(
        0, ge=0, le=8, description="local standalone cluster: workers `up` starts beside a master (0: none)"
    )
    cluster_port: int = Field(7077, ge=1, le=65535, description="local standalone cluster: the master's port")
    ui_port: int = Field(
        8080, ge=1, le=65535, description="local standalone cluster: the master's web UI (worker i: ui_port + i)"
    )
    worker_cores: int = Field(1, ge=1, description="local standalone cluster: cores each worker offers")
    worker_memory: str = Field("2g", pattern=r"^\d+[mgMG]$", description="local standalone cluster: memory per worker")
    class_archive: bool = Field(
        True,
        description="the driver JVM maps the class-data archive `fleetstream jars fetch` made (a faster start)",
    )

    @property
    def cluster_url(self) -> str:
        """The local standalone master's URL.

        >>> SparkSettings(workers=2).cluster_url
        'spark://127.0.0.1:7077'
        """
        return f"spark://{LOCAL_HOST}:{self.cluster_port}"

    @model_validator(mode="after")
    def _local_cluster(self) -> SparkSettings:
        """With a local cluster and no master chosen, the commands submit to that cluster.

        >>> SparkSettings(workers=1).master, SparkSettings(workers=1, master="local[2]").master
        ('spark://127.0.0.1:7077', 'local[2]')
        """
        if self.workers and "master" not in self.model_fields_set:
            self.__dict__["master"] = self.cluster_url
        return self

    @property
    def on_local_cluster(self) -> bool:
        return self.workers > 0 and self.master == self.cluster_url

    conf: dict[str, str] = Field(
        default_factory=dict,
        description="extra Spark properties, over fleetstream's defaults (JSON object in the environment)",
    )


class LakeSettings(_Frozen):
    """Where the Delta tables and the reference data live: a local folder or an s3a:// URI."""

    root: str = "lakehouse"
    dims_location: str | None = Field(
        None, description="folder or s3a:// prefix of the reference data; default: <root>/dims"
    )
    dims_refresh_s: float = Field(60.0, gt=0, description="the stream rereads the reference data this often")
    driver_writes: bool = Field(
        True,
        description="on a lake on this machine's disk, the stream appends a small batch's rows (fetched by one "
        "Spark job per table) from its driver with delta-rs, not by a Spark write and commit; false: Spark writes "
        "every table",
    )

    @property
    def dims(self) -> str:
        """Reference data (car models, colors, cars) as JSON lines."""
        return self.dims_location or f"{self.root.rstrip('/')}/dims"


class DashboardSettings(_Frozen):
    """The Streamlit dashboard: where it listens, how often panels refresh, the map's tiles."""

    host: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    refresh_s: float = Field(2.0, ge=0.5, le=60, description="panels re-read their data this often")
    map_tiles: str | None = Field(
        "https://basemaps.cartocdn.com/dark_all/{z}/{x}/{y}.png",
        description="raster tile URL under the map; empty: a plain dark background (offline)",
    )

    token: SecretStr | None = Field(
        None, description="the token the cockpit's controls ask for; needed when host is not loopback"
    )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def exposed(self) -> bool:
        """True when other machines may reach it (bound to anything but loopback)."""
        return self.host not in (LOCAL_HOST, "localhost", "::1")


class MlflowSettings(_Frozen):
    """ML tracking and the model registry: the local MLflow server (`fleetstream up --mlflow`) or any
    MLflow tracking server.

    Leave ``tracking_uri`` unset to use the local server (SQLite and artifacts under the state
    directory, bound to 127.0.0.1); set it (``http://mlflow.example:5000``) to use an existing one.
    """

    tracking_uri: str | None = None
    port: int = Field(5000, ge=1, le=65535, description="local MLflow server: port")
    experiment: str = Field("fleetstream-driving-style", description="the experiment training runs go to")
    model_name: str = Field("fleetstream-driving-style", description="the registered model")

    @property
    def managed(self) -> bool:
        """True when fleetstream runs the MLflow server itself."""
        return self.tracking_uri is None

    @property
    def uri(self) -> str:
        """The tracking URI clients use."""
        return self.tracking_uri or f"http://{LOCAL_HOST}:{self.port}"


class SqlSettings(_Frozen):
    """The SQL endpoint (`fleetstream sql serve`, `fleetstream up --sql`): Spark's Thrift server,
    HiveServer2's protocol (beeline, JDBC and ODBC clients; docs/sql.md)."""

    host: str = Field(LOCAL_HOST, description="the address it listens on; anything but loopback needs a password")
    port: int = Field(10000, ge=1, le=65535, description="the HiveServer2 (Thrift, binary) port")
    user: str = Field("fleet", min_length=1, description="the user clients log in as, when a password is set")
    password: SecretStr | None = Field(None, description="when set, clients must log in (user and password)")
    read_only: bool = Field(True, description="refuse every statement that writes or changes the catalog")
    refresh_s: float = Field(30.0, gt=0, description="tables the stream creates later are registered this often")
    driver_memory: str = Field("1g", pattern=r"^\d+[kmgKMG]$", description="the server's Spark driver heap")

    @property
    def client_host(self) -> str:
        """Where a client on this machine reaches it (loopback when it listens on every address)."""
        return LOCAL_HOST if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104

    @property
    def url(self) -> str:
        """The JDBC URL clients on this machine use."""
        return f"jdbc:hive2://{self.client_host}:{self.port}/fleet"


class AirflowSettings(_Frozen):
    """Airflow 3, which runs the batch jobs (`fleetstream up --airflow`, docs/operations.md): the local
    one (api-server, scheduler and dag-processor; SQLite under the state directory; bound to 127.0.0.1;
    the admin password generated into ``<state_dir>/airflow/passwords.json``), or any Airflow 3 API
    server (``url``, ``user`` and ``password``) for the ops bot's /dags, /run, /runs and /kill."""

    url: str | None = Field(None, description="an existing Airflow's API server (http://airflow.example:8080)")
    port: int = Field(8080, ge=1, le=65535, description="local Airflow: the API server's (and UI's) port")
    user: str = Field("admin", min_length=1, description="the user fleetstream logs in as")
    password: SecretStr | None = Field(None, description="its password; local Airflow: generated when unset")
    parallelism: int = Field(2, ge=1, le=64, description="local Airflow: tasks that may run at once")

    @property
    def managed(self) -> bool:
        """True when fleetstream runs Airflow itself."""
        return self.url is None

    @property
    def base_url(self) -> str:
        """Where clients reach the API server (and the UI)."""
        return (self.url or f"http://{LOCAL_HOST}:{self.port}").rstrip("/")


class QualitySettings(_Frozen):
    """The data-quality gate (`fleetstream quality check`, docs/quality.md)."""

    suites: Path | None = Field(None, description="an expectation suites YAML file; default: the built-in suites")
    hold_gold: bool = Field(
        False, description="the stream leaves gold as it is while a table fails its critical expectations"
    )


class MaintenanceSettings(_Frozen):
    """Service thresholds for ``gold/maintenance`` (docs/ml.md): kilometres and days left are
    counted to these, at each car's wear rate and daily distance over the lookback."""

    tyre_wear_limit_pct: float = Field(80.0, gt=0, le=100, description="tyres are due at this tread wear (%)")
    brake_wear_limit_pct: float = Field(80.0, gt=0, le=100, description="brake pads are due at this wear (%)")
    service_interval_km: float = Field(15_000.0, gt=0, description="a service every this many km of odometer")
    lookback_days: float = Field(7.0, gt=0, description="wear rates, daily distance and fuel use over this many days")
    every_min: int = Field(5, ge=1, description="the stream recomputes gold/maintenance every this many minutes")


class TelegramSettings(_Frozen):
    """The Telegram Bot API (docs/operations.md): the bot's token, where notifications go, and who the
    ops bot answers. Off while the token is unset."""

    token: SecretStr | None = Field(None, description="the bot's token from @BotFather")
    base_url: str = Field("https://api.telegram.org", description="the Bot API server (a local one, or a test's)")
    chat_ids: list[int] = Field(default_factory=list, description="chats `fleetstream notify` sends to")
    allowed_chat_ids: list[int] = Field(
        default_factory=list, description="chats `fleetstream bot` answers; every other chat is refused and logged"
    )


class NotifySettings(_Frozen):
    """`fleetstream notify`'s other channels and its pacing (docs/operations.md)."""

    slack_webhook_url: SecretStr | None = Field(None, description="a Slack incoming webhook (the URL is the secret)")
    webhook_url: str | None = Field(None, description="a generic webhook: JSON, HMAC-signed when a secret is set")
    webhook_secret: SecretStr | None = Field(None, description="the generic webhook's HMAC-SHA256 key")
    critical_window_s: float = Field(
        10.0, gt=0, le=3600, description="critical alerts arriving within this many seconds go out as one message"
    )
    retries: int = Field(4, ge=0, le=10, description="attempts after the first on a 429, a 5xx or a network error")
    timeout_s: float = Field(10.0, gt=0, description="each HTTP request's timeout")


class BotSettings(_Frozen):
    """`fleetstream bot`, the ops bot on Telegram (its token and allowed chats: TelegramSettings)."""

    sql_row_limit: int = Field(20, ge=1, le=1000, description="rows /sql answers with at most")
    sql_timeout_s: float = Field(60.0, gt=0, description="a /sql question is given up after this long")
    poll_timeout_s: int = Field(30, ge=0, le=50, description="getUpdates long-polling timeout")
    ai_base_url: str | None = Field(
        None, description="an OpenAI-compatible API (e.g. https://api.openai.com/v1) for /ai; unset: /ai is off"
    )
    ai_api_key: SecretStr | None = Field(None, description="its API key")
    ai_model: str | None = Field(None, description="the model /ai asks (it must support tool calls)")
    ai_max_steps: int = Field(4, ge=1, le=10, description="rounds of tool calls /ai may make for one question")
    ai_timeout_s: float = Field(60.0, gt=0, description="each request to the model's API")


class Settings(BaseSettings):
    """All of fleetstream's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    state_dir: Path = Field(Path(".fleetstream"), description="where the local stack keeps data, logs, pids")
    cache_dir: Path = Field(Path.home() / ".cache" / "fleetstream", description="downloaded jars")
    java_home: Path | None = Field(None, description="Java 17+ to run the broker; default: java on PATH")
    kafka: KafkaSettings = KafkaSettings()
    s3: S3Settings = S3Settings()
    spark: SparkSettings = SparkSettings()
    lake: LakeSettings = LakeSettings()
    dashboard: DashboardSettings = DashboardSettings()
    mlflow: MlflowSettings = MlflowSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    sql: SqlSettings = SqlSettings()
    airflow: AirflowSettings = AirflowSettings()
    quality: QualitySettings = QualitySettings()
    telegram: TelegramSettings = TelegramSettings()
    notify: NotifySettings = NotifySettings()
    bot: BotSettings = BotSettings()

    @field_validator("state_dir", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _secure_local_broker(self) -> Settings:
        if self.kafka.secure:
            # a frozen model: replace the field the way pydantic stores it
            self.__dict__["kafka"] = secure_client(self.kafka, self.state_dir)
        return self


#: the secure local broker's generated files, under ``<state_dir>/kafka``
KAFKA_TLS_DIR = Path("kafka") / "tls"
KAFKA_USERS_DIR = Path("kafka") / "users"
#: who connects to the secure local broker when no sasl_username is set: the super user
KAFKA_ADMIN = "admin"


def secure_client(kafka: KafkaSettings, state_dir: Path) -> KafkaSettings:
    """A client's settings for the secure local broker: SASL_SSL with SCRAM-SHA-512 as ``sasl_username``
    (default admin), its password from the file the broker's users were created from, the local CA.
    Settings given explicitly stay; applying it twice changes nothing.

    >>> k = secure_client(KafkaSettings(secure=True), Path("/s"))
    >>> k.security_protocol, k.sasl_username, str(k.sasl_password_file), str(k.ssl_ca_file)
    ('SASL_SSL', 'admin', '/s/kafka/users/admin', '/s/kafka/tls/ca.pem')
    >>> secure_client(k, Path("/s")) == k
    True
    """
    if not kafka.managed:
        raise ValueError(
            "kafka.secure (FLEETSTREAM_KAFKA__SECURE) secures the local broker; for an existing cluster "
            "(FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS) set FLEETSTREAM_KAFKA__SECURITY_PROTOCOL, __SASL_* and "
            "__SSL_* instead"
        )
    if kafka.security_protocol not in ("PLAINTEXT", "SASL_SSL"):
        raise ValueError(f"kafka.secure means SASL_SSL; security_protocol {kafka.security_protocol} contradicts it")
    user = kafka.sasl_username or KAFKA_ADMIN
    return KafkaSettings.model_validate(
        {
            **dict(kafka),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": kafka.sasl_mechanism or "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password_file": kafka.sasl_password_file
            or (None if kafka.sasl_password is not None else state_dir / KAFKA_USERS_DIR / user),
            "ssl_ca_file": kafka.ssl_ca_file or state_dir / KAFKA_TLS_DIR / "ca.pem",
        }
    )


def process_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (an environment) without its FLEETSTREAM_* variables, plus those that make a child
    process see these settings' Kafka (its security too), topics, S3 endpoint and keys, lake and MLflow
    (a benchmark's or a test's private ones).

    >>> env = process_env(Settings(lake=LakeSettings(root="/tmp/l")), {"PATH": "/bin", "FLEETSTREAM_X": "1"})
    >>> env["PATH"], env["FLEETSTREAM_LAKE__ROOT"], env["FLEETSTREAM_KAFKA__TOPICS__ALERTS"], "FLEETSTREAM_X" in env
    ('/bin', '/tmp/l', 'alert-data', False)
    """
    env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    env[f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap
    for name, topic in settings.kafka.topics.model_dump().items():
        env[f"{ENV_PREFIX}KAFKA__TOPICS__{name.upper()}"] = topic
    kafka = settings.kafka
    security = {"SECURITY_PROTOCOL": kafka.security_protocol, "SASL_MECHANISM": kafka.sasl_mechanism,
                "SASL_USERNAME": kafka.sasl_username, "SASL_PASSWORD_FILE": kafka.sasl_password_file,
                "SSL_CA_FILE": kafka.ssl_ca_file,
                "SSL_CERT_FILE": kafka.ssl_cert_file, "SSL_KEY_FILE": kafka.ssl_key_file,
                "SSL_CHECK_HOSTNAME": str(kafka.ssl_check_hostname).lower()}  # fmt: skip
    secret = {"SASL_PASSWORD": kafka.sasl_password, "SSL_KEY_PASSWORD": kafka.ssl_key_password}
    env |= {f"{ENV_PREFIX}KAFKA__{k}": str(v) for k, v in security.items() if v is not None}
    env |= {f"{ENV_PREFIX}KAFKA__{k}": v.get_secret_value() for k, v in secret.items() if v is not None}
    s3 = settings.s3
    if s3.endpoint_url:
        env[f"{ENV_PREFIX}S3__ENDPOINT_URL"] = s3.endpoint_url
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        env[f"{ENV_PREFIX}S3__ACCESS_KEY_ID"] = s3.access_key_id.get_secret_value()
        env[f"{ENV_PREFIX}S3__SECRET_ACCESS_KEY"] = s3.secret_access_key.get_secret_value()
    env[f"{ENV_PREFIX}LAKE__ROOT"] = settings.lake.root
    env[f"{ENV_PREFIX}MLFLOW__PORT"] = str(settings.mlflow.port)
    if settings.mlflow.tracking_uri:
        env[f"{ENV_PREFIX}MLFLOW__TRACKING_URI"] = settings.mlflow.tracking_uri
    return env


def settings_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without its FLEETSTREAM_* variables, plus every setting of ``settings`` as one (secrets
    included): a child process (an Airflow task) then has exactly these settings, wherever they came
    from (the environment, .env, or code), whatever its working directory.

    >>> import os
    >>> settings = Settings(lake=LakeSettings(root="/tmp/l"), telegram=TelegramSettings(token="1:x", chat_ids=[5]))
    >>> env = settings_env(settings, {"PATH": "/bin", "FLEETSTREAM_X": "1"})
    >>> env["FLEETSTREAM_TELEGRAM__TOKEN"], env["FLEETSTREAM_TELEGRAM__CHAT_IDS"], "FLEETSTREAM_X" in env
    ('1:x', '[5]', False)
    """
    import json

    env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            key = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(f"{key}__", value)
            elif value is None:
                continue
            elif isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            elif isinstance(value, list | dict):
                env[key] = json.dumps(value)
            elif isinstance(value, bool):
                env[key] = str(value).lower()
            else:
                env[key] = str(value)

    walk(ENV_PREFIX, settings)
    return env
