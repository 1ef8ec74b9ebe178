"""`fleetstream up / down / status`: the local stack as real processes, recorded by pid.

A part that settings point at an existing system (Kafka cluster, S3 endpoint) is not started: `up`
only checks that it answers.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from confluent_kafka import KafkaException

from fleetstream.clients import S3_SERVICE_ACTIONS
from fleetstream.config import ENV_PREFIX, LOCAL_HOST, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.ingest.kafka import TopicInfo, broker_count, describe_topics, ensure_topics
from fleetstream.local import (
    airflow_server,
    kafka_broker,
    kafka_security,
    mlflow_server,
    process,
    seaweedfs,
    spark_cluster,
)
from fleetstream.local.process import (
    Service,
    StateFile,
    port_is_free,
    port_owner,
    spawn,
    stop,
    stop_together,
    tail,
    wait_until,
)

log = logging.getLogger(__name__)

KAFKA = "kafka"
S3 = "seaweedfs"
MLFLOW = "mlflow"
SQL = "sql"
STREAM = "stream"
#: `fleetstream run`'s operations processes (fleetstream.ops.apps), listed by `status` when running
OPS_APPS = ("notify-summary", "notify-critical", "bot")
SQL_START_TIMEOUT = 180.0  # a Spark driver, the first time also compiling the endpoint's two classes
MLFLOW_START_TIMEOUT = 120.0  # its first start creates the SQLite store (about 25 s on two cores)
AIRFLOW_START_TIMEOUT = 180.0  # three Python processes importing Airflow, then their first heartbeats
KAFKA_START_TIMEOUT = 90.0
S3_START_TIMEOUT = 60.0
SPARK_START_TIMEOUT = 90.0
#: seconds from SIGTERM to SIGKILL where a part needs more than process.STOP_GRACE_S. SeaweedFS's
#: volume server closes its idle HTTP connections at once but waits up to 30 s for the others (a
#: connection opened and not yet used counts; its `httpdown` StopTimeout). CI saw `down` kill it 20 s
#: in, still draining. A kill loses nothing acknowledged (tests/chaos kills it mid-write); a clean stop
#: leaves no warning.
STOP_GRACE_S = {S3: 40.0, STREAM: 60.0}
#: Parts whose leader stops its own children: SIGTERM to it alone; its descendants (as they were at
#: the SIGTERM) are killed only if still there after the grace (60 s for the stream). The stream's
#: Python stops its queries (a batch under way is interrupted and done again at the next start), its
#: alert publisher and its Spark context; its JVM exits with it. SIGTERM to the whole group stopped
#: the JVM under the Python side, whose query stops then failed with a connection error in the log.
LEADER_STOPS = frozenset({STREAM})


class AlreadyRunningError(FleetstreamError):
    """`up` found a stack of this state directory running."""


@dataclass(frozen=True)
class PartStatus:
    """One part of the stack as `status` sees it."""

    name: str
    managed: bool
    address: str
    healthy: bool
    pid: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class StackStatus:
    parts: list[PartStatus]
    topics: list[TopicInfo] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(part.healthy for part in self.parts)


def _required_ports(
    settings: Settings,
    kafka_nodes: Sequence[int],
    with_s3: bool,
    with_mlflow: bool,
    with_airflow: bool,
    spark_parts: Sequence[str] = (),
) -> list[tuple[int, str, str]]:
    """(port, what uses it, the setting that moves it) for every port the parts to start will bind."""
    needed = []
    spark_ports = spark_cluster.ports(settings)
    if spark_cluster.MASTER in spark_parts:
        needed += [(spark_ports[w], w, "FLEETSTREAM_SPARK__CLUSTER_PORT / __UI_PORT") for w in list(spark_ports)[:2]]
    for name in spark_parts:
        if name != spark_cluster.MASTER:
            what = f"Spark worker {name.rsplit('-', 1)[1]} web UI"
            needed.append((spark_ports[what], what, "FLEETSTREAM_SPARK__UI_PORT"))
    if settings.kafka.managed:
        for node in kafka_nodes:
            port, controller = settings.kafka.node_ports(node)
            which = "" if settings.kafka.brokers == 1 else f" of node {node}"
            needed += [
                (port, f"Kafka client listener{which}", "FLEETSTREAM_KAFKA__PORT"),
                (controller, f"Kafka controller{which}", "FLEETSTREAM_KAFKA__CONTROLLER_PORT"),
            ]
    if with_s3 and settings.s3.managed:
        needed += [
            (port, f"SeaweedFS {role}", "FLEETSTREAM_S3__PORT") for role, port in seaweedfs.ports(settings.s3).items()
        ]
    if with_mlflow and settings.mlflow.managed:
        needed.append((settings.mlflow.port, "MLflow tracking server", "FLEETSTREAM_MLFLOW__PORT"))
    if with_airflow and settings.airflow.managed:
        needed.append((settings.airflow.port, "Airflow API server", "FLEETSTREAM_AIRFLOW__PORT"))
    return needed


def check_ports(
    settings: Settings,
    kafka_nodes: Sequence[int],
    with_s3: bool,
    with_mlflow: bool,
    with_airflow: bool,
    spark_parts: Sequence[str] = (),
) -> None:
    """Refuse to start when a port of a part to start (``kafka_nodes``: the Kafka nodes;
    ``spark_parts``: the Spark cluster's services) is taken."""
    for port, what, setting in _required_ports(settings, kafka_nodes, with_s3, with_mlflow, with_airflow, spark_parts):
        if not port_is_free(LOCAL_HOST, port):
            raise FleetstreamError(
                f"Port {port} on {LOCAL_HOST}, needed for the {what}, is already in use by "
                f"{port_owner(port)}. Stop that process, or move fleetstream to another port with {setting}=<port> "
                "(in the environment or .env). Nothing was started."
            )


def running_services(settings: Settings) -> list[Service]:
    return [s for s in StateFile(settings.state_dir).read() if s.alive()]


def up(
    settings: Settings, with_s3: bool = False, with_mlflow: bool = False, with_airflow: bool = False
) -> list[Service]:
    """Start every managed part, wait until each is healthy, create the topics; return what started.

    With part of the stack already running (a part stopped: crashed, killed, halted on a full
    disk), only the parts that are down are started; the running ones are left as they are. With
    every part running, nothing is started (:class:`AlreadyRunningError`).

    On any failure, whatever this call started is stopped again before the error is raised.
    """
    state = StateFile(settings.state_dir)
    with state.locked():
        already = [s for s in state.read() if s.alive()]
        running = {s.name for s in already}
        nodes_down = [n for n in range(1, settings.kafka.brokers + 1) if kafka_broker.node_name(n) not in running]
        kafka_down = settings.kafka.managed and bool(nodes_down)
        # the managed parts asked for that are not running (parts elsewhere are only checked)
        s3_down = with_s3 and settings.s3.managed and S3 not in running
        mlflow_down = with_mlflow and settings.mlflow.managed and MLFLOW not in running
        airflow_down = with_airflow and settings.airflow.managed and not running & set(airflow_server.commands())
        spark_down = [name for name in spark_cluster.names(settings) if settings.spark.workers and name not in running]
        if already and not (kafka_down or s3_down or mlflow_down or airflow_down or spark_down):
            listing = ", ".join(f"{s.name} (pid {s.pid}, {s.address})" for s in already)
            raise AlreadyRunningError(
                f"The fleetstream stack of {settings.state_dir} is already running: {listing}. "
                "Nothing new was started. See `fleetstream status`, or stop it with `fleetstream down`."
            )
        if already:
            log.info("already running: %s; starting the parts that are down", ", ".join(sorted(running)))
        check_ports(settings, nodes_down if kafka_down else [], s3_down, mlflow_down, airflow_down, spark_down)
        started: list[Service] = []
        recorded = already  # the running parts, kept in the state file beside those started here
        try:
            if kafka_down:
                started += _start_kafka(settings, state, [*recorded, *started], nodes_down)
            elif not settings.kafka.managed and broker_count(settings.kafka, timeout=10) == 0:
                raise FleetstreamError(
                    f"The Kafka cluster at {settings.kafka.bootstrap} (FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS) "
                    "did not answer within 10 s. Check the address, the network and the security settings "
                    "(FLEETSTREAM_KAFKA__SECURITY_PROTOCOL, __SASL_*)."
                )
            if s3_down:
                started.append(_start_seaweedfs(settings, state, [*recorded, *started]))
            elif with_s3 and not settings.s3.managed and not seaweedfs.bucket_ready(settings):
                raise FleetstreamError(
                    f"The S3 endpoint {settings.s3.endpoint} (FLEETSTREAM_S3__ENDPOINT_URL) did not "
                    f"answer, or the bucket '{settings.s3.bucket}' does not exist or is not readable with the "
                    "configured credentials. Create the bucket or fix FLEETSTREAM_S3__* and try again."
                )
            if spark_down:
                started += _start_spark(settings, state, [*recorded, *started], spark_down)
            external_mlflow = with_mlflow and not settings.mlflow.managed  # checked by _start_mlflow
            if (mlflow_down or external_mlflow) and (mlflow := _start_mlflow(settings, state, [*recorded, *started])):
                started.append(mlflow)
            if airflow_down or (with_airflow and not settings.airflow.managed):
                started += _start_airflow(settings, state, [*recorded, *started])
            try:
                created = ensure_topics(settings.kafka, settings.kafka.topics.all())
            except KafkaException as exc:
                raise FleetstreamError(
                    f"Creating the topics on {settings.kafka.bootstrap} failed: {exc}. Check that this client may "
                    "create topics there, or create them yourself (names: `fleetstream config`)."
                ) from exc
            if created:
                log.info("created topics %s", ", ".join(created))
            if settings.kafka.managed and settings.kafka.secure:
                count = kafka_security.apply_acls(settings.kafka)
                log.info("Kafka ACLs in place (%d): each service user reaches its own topics only", count)
        except BaseException:
            stop_in_order(list(reversed(started)))
            if recorded:
                state.write(recorded)
            else:
                state.clear()
            raise
        return started


def _start_kafka(settings: Settings, state: StateFile, started: list[Service], nodes: Sequence[int]) -> list[Service]:
    """Start the given nodes of the local cluster (all of them first: a quorum needs most of its
    voters), then wait until every node of the cluster answers."""
    began = time.monotonic()
    ours: list[Service] = []
    for node in nodes:
        command = kafka_broker.prepare(settings, node)
        port, _ = settings.kafka.node_ports(node)
        home = kafka_broker.broker_dir(settings, node)
        ours.append(spawn(kafka_broker.node_name(node), command, home / "kafka.log", address=f"{LOCAL_HOST}:{port}"))
        state.write([*started, *ours])
    want = settings.kafka.brokers

    def all_answer() -> bool:
        for service in ours:
            if not service.alive():
                said = tail(service.log)
                raise FleetstreamError(
                    f"Kafka node {service.name} exited during start-up. Last lines of {service.log}:\n{said}"
                )
        return broker_count(settings.kafka, timeout=1) >= want

    try:
        wait_until(all_answer, KAFKA_START_TIMEOUT, "The Kafka broker" if want == 1 else "The Kafka cluster", ours[0])
    except BaseException:
        stop_together(ours)
        raise
    names = ", ".join(f"{s.name} (pid {s.pid})" for s in ours)
    log.info("Kafka healthy on %s in %.1f s: %s", settings.kafka.bootstrap, time.monotonic() - began, names)
    return ours


def _start_spark(settings: Settings, state: StateFile, started: list[Service], parts: Sequence[str]) -> list[Service]:
    """Start the local Spark cluster's services that are down (the master first), then wait until
    the master answers with every worker registered."""
    began = time.monotonic()
    env = spark_cluster.environment(settings, os.environ)
    home = spark_cluster.cluster_dir(settings)
    ours: list[Service] = []
    try:
        for name in parts:
            worker = 0 if name == spark_cluster.MASTER else int(name.rsplit("-", 1)[1])
            argv = (
                spark_cluster.master_command(settings)
                if worker == 0
                else spark_cluster.worker_command(settings, worker)
            )
            address = settings.spark.cluster_url if worker == 0 else f"worker {worker} of {settings.spark.cluster_url}"
            ours.append(spawn(name, argv, home / f"{name}.log", address=address, env=env))
            state.write([*started, *ours])
            if worker == 0:
                wait_until(lambda: spark_cluster.master_state(settings) is not None, SPARK_START_TIMEOUT,
                           "The Spark master", ours[-1])  # fmt: skip
        want = settings.spark.workers

        def registered() -> bool:
            for service in ours:
                if not service.alive():
                    raise FleetstreamError(f"{service.name} exited during start-up. Last lines of {service.log}:\n"
                                           f"{tail(service.log)}")  # fmt: skip
            return spark_cluster.alive_workers(settings) >= want

        wait_until(registered, SPARK_START_TIMEOUT, "The Spark cluster")
    except BaseException:
        for service in reversed(ours):
            stop(service)
        raise
    log.info("Spark standalone cluster %s healthy in %.1f s: %s", settings.spark.cluster_url,
             time.monotonic() - began, ", ".join(f"{s.name} (pid {s.pid})" for s in ours))  # fmt: skip
    return ours


def _start_seaweedfs(settings: Settings, state: StateFile, started: list[Service]) -> Service:
    command = seaweedfs.prepare(settings)
    began = time.monotonic()
    service = spawn(S3, command, seaweedfs.seaweed_dir(settings) / "weed.log", address=settings.s3.endpoint)
    state.write([*started, service])
    wait_until(lambda: seaweedfs.bucket_ready(settings), S3_START_TIMEOUT, "SeaweedFS", service)
    log.info(
        "SeaweedFS S3 healthy on %s, bucket '%s', in %.1f s (pid %d)",
        service.address, settings.s3.bucket, time.monotonic() - began, service.pid,
    )  # fmt: skip
    return service


def _start_mlflow(settings: Settings, state: StateFile, started: list[Service]) -> Service | None:
    """The local MLflow server (None when settings point at an existing one, which must answer)."""
    service, ready = _launch_mlflow(settings, state, started)
    ready()
    return service


def _launch_mlflow(
    settings: Settings, state: StateFile, started: list[Service]
) -> tuple[Service | None, Callable[[], None]]:
    """:func:`_start_mlflow` in two steps: the server spawned and recorded, and what waits until it
    is healthy (stopping it, and raising, when it is not)."""
    if not settings.mlflow.managed:
        if not mlflow_server.healthy(settings.mlflow.uri, timeout=10):
            raise FleetstreamError(
                f"The MLflow tracking server at {settings.mlflow.uri} (FLEETSTREAM_MLFLOW__TRACKING_URI) did not "
                "answer its health check within 10 s. Check the address, or unset it to run a local server."
            )
        return None, lambda: None
    command, env = mlflow_server.prepare(settings)
    began = time.monotonic()
    home = mlflow_server.mlflow_dir(settings)
    service = spawn(MLFLOW, command, home / "mlflow.log", address=settings.mlflow.uri, env=env)
    state.write([*started, service])

    def ready() -> None:
        try:
            wait_until(
                lambda: mlflow_server.healthy(settings.mlflow.uri), MLFLOW_START_TIMEOUT, "The MLflow server", service
            )
        except BaseException:
            stop(service)
            state.write(started)
            raise
        log.info("MLflow tracking server healthy on %s in %.1f s (pid %d)", service.address,
                 time.monotonic() - began, service.pid)  # fmt: skip

    return service, ready


def start_mlflow(settings: Settings) -> Service | None:
    """Start the local MLflow server beside a running stack (recorded with it, so `down` stops it);
    None when settings point at an existing server."""
    state = StateFile(settings.state_dir)
    with state.locked():
        if settings.mlflow.managed and not port_is_free(LOCAL_HOST, settings.mlflow.port):
            raise FleetstreamError(
                f"Port {settings.mlflow.port} on {LOCAL_HOST}, needed for the MLflow tracking server, is already in "
                f"use by {port_owner(settings.mlflow.port)}. Stop that process, or move it with "
                "FLEETSTREAM_MLFLOW__PORT=<port>, or use an existing server with FLEETSTREAM_MLFLOW__TRACKING_URI."
            )
        return _start_mlflow(settings, state, [s for s in state.read() if s.alive()])


def _start_airflow(settings: Settings, state: StateFile, started: list[Service]) -> list[Service]:
    """The local Airflow's processes, healthy (none when settings point at an existing Airflow,
    which must answer)."""
    ours, ready = _launch_airflow(settings, state, started)
    ready()
    return ours


def _launch_airflow(
    settings: Settings, state: StateFile, started: list[Service]
) -> tuple[list[Service], Callable[[], None]]:
    """:func:`_start_airflow` in two steps: the database migrated and the processes spawned and
    recorded, and what waits until they are healthy (stopping them, and raising, when not)."""
    if not settings.airflow.managed:
        if airflow_server.health(settings.airflow.base_url, timeout=10) is None:
            raise FleetstreamError(
                f"The Airflow API server at {settings.airflow.base_url} (FLEETSTREAM_AIRFLOW__URL) did not answer "
                "its health check within 10 s. Check the address, or unset it to run a local Airflow."
            )
        return [], lambda: None
    began = time.monotonic()
    env = airflow_server.environment(settings, os.environ)
    airflow_server.migrate(env)
    home = airflow_server.airflow_dir(settings)
    ours: list[Service] = []

    def stopped() -> None:
        for service in reversed(ours):
            stop(service)
        state.write(started)

    try:
        for name, argv in airflow_server.commands().items():
            ours.append(spawn(name, argv, home / f"{name.removeprefix('airflow-')}.log",
                              address=settings.airflow.base_url, env=env))  # fmt: skip
            state.write([*started, *ours])
    except BaseException:
        stopped()
        raise

    def all_healthy() -> bool:
        for service in ours:  # each must stay up while the others come
            if not service.alive():
                raise FleetstreamError(
                    f"{service.name} exited during start-up. Last lines of {service.log}:\n{tail(service.log)}"
                )
        answer = airflow_server.health(settings.airflow.base_url)
        return all(airflow_server.part_healthy(answer, name) for name in airflow_server.PROCESSES)

    def ready() -> None:
        try:
            wait_until(all_healthy, AIRFLOW_START_TIMEOUT, "Airflow")
        except FleetstreamError as exc:
            stopped()
            if "did not become healthy" not in str(exc):
                raise
            logs = "\n".join(f"--- {s.log}\n{tail(s.log, 8)}" for s in ours)
            raise FleetstreamError(f"{exc} Last lines of its logs:\n{logs}") from None
        except BaseException:
            stopped()
            raise
        log.info("Airflow healthy on %s in %.1f s (pids %s)", settings.airflow.base_url, time.monotonic() - began,
                 ", ".join(str(s.pid) for s in ours))  # fmt: skip

    return ours, ready


def start_airflow(settings: Settings) -> list[Service]:
    """Start the local Airflow beside a running stack (recorded with it, so `down` stops it)."""
    state = StateFile(settings.state_dir)
    with state.locked():
        if settings.airflow.managed and not port_is_free(LOCAL_HOST, settings.airflow.port):
            raise FleetstreamError(
                f"Port {settings.airflow.port} on {LOCAL_HOST}, needed for the Airflow API server, is already in use "
                f"by {port_owner(settings.airflow.port)}. Stop that process, or move it with "
                "FLEETSTREAM_AIRFLOW__PORT=<port>, or use an existing Airflow with FLEETSTREAM_AIRFLOW__URL."
            )
        return _start_airflow(settings, state, [s for s in state.read() if s.alive()])


class _Together:
    """The state file while parts start at the same time, each in a thread: each part records its
    own services as the start functions do (what was running, then its own), and the file gets
    all of them. Once ``closed`` (the start was interrupted and the stack is being stopped), a part
    still running records nothing more."""

    def __init__(self, state: StateFile, running: list[Service]) -> None:
        self.state, self.running = state, running
        self.parts: dict[str, list[Service]] = {}
        self.lock = threading.Lock()
        self.closed = False

    def record(self, part: str, services: Sequence[Service]) -> None:
        with self.lock:
            if self.closed:
                return
            self.parts[part] = [s for s in services if s not in self.running]
            self.state.write([*self.running, *(s for ours in self.parts.values() for s in ours)])


class _PartState(StateFile):
    """One part's view of :class:`_Together` (what its start function writes goes there)."""

    def __init__(self, together: _Together, part: str) -> None:
        super().__init__(together.state.state_dir)
        self.together, self.part = together, part

    def write(self, services: Sequence[Service]) -> None:
        self.together.record(self.part, services)


def start_servers(settings: Settings, mlflow: bool, airflow: bool) -> tuple[list[Service], dict[str, FleetstreamError]]:
    """Start MLflow and Airflow beside a running stack (recorded with it, so `down` stops them),
    their waits side by side: each takes tens of seconds on two cores, most of it waiting on its
    Python processes. Both are spawned (and Airflow's database migrated) by this thread, which a
    Ctrl-C interrupts with everything recorded; only the health checks run in threads. Returns
    what started and, by part (``mlflow``, ``airflow``), why one did not; a part that failed is
    stopped, the other kept."""
    launchers: dict[str, Callable[[StateFile, list[Service]], tuple[list[Service], Callable[[], None]]]] = {}
    if mlflow:
        launchers[MLFLOW] = lambda state, running: _as_list(*_launch_mlflow(settings, state, running))
    if airflow:
        launchers["airflow"] = lambda state, running: _launch_airflow(settings, state, running)
    state = StateFile(settings.state_dir)
    launched: dict[str, tuple[list[Service], Callable[[], None]]] = {}
    failed: dict[str, FleetstreamError] = {}
    with state.locked():
        running = [s for s in state.read() if s.alive()]
        together = _Together(state, running)
        for part, launch in launchers.items():
            try:
                check_ports(settings, [], False, part == MLFLOW and settings.mlflow.managed,
                            part == "airflow" and settings.airflow.managed)  # fmt: skip
                launched[part] = launch(_PartState(together, part), running)
            except FleetstreamError as exc:
                failed[part] = exc

        def wait(part: str) -> None:
            try:
                launched[part][1]()
            except FleetstreamError as exc:
                failed[part] = exc
            except Exception as exc:  # (an OSError, a psutil error: the part was stopped by its wait)
                failed[part] = FleetstreamError(f"{part}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=wait, args=(part,), daemon=True) for part in launched]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException:  # (Ctrl-C: the caller stops what is recorded; a wait that fails records no more)
            with together.lock:
                together.closed = True
            raise
    return [s for part, (ours, _) in launched.items() if part not in failed for s in ours], failed


def _as_list(service: Service | None, ready: Callable[[], None]) -> tuple[list[Service], Callable[[], None]]:
    return ([service] if service is not None else []), ready


def sql_answers(settings: Settings) -> bool:
    """True when something accepts connections on the SQL endpoint's port."""
    return not port_is_free(settings.sql.client_host, settings.sql.port)


def start_sql(settings: Settings, argv: list[str], env: Mapping[str, str] | None = None) -> Service:
    """Start the SQL endpoint (``argv``: `fleetstream sql serve`, in ``env``, default this process's)
    beside a running stack, recorded with it, and wait until it accepts connections."""
    if sql_answers(settings):
        raise FleetstreamError(
            f"Port {settings.sql.port}, needed for the SQL endpoint, is already in use by "
            f"{port_owner(settings.sql.port)}. Stop that process, or move it with FLEETSTREAM_SQL__PORT=<port>."
        )
    service = start_app(settings, SQL, argv, env)
    try:
        wait_until(lambda: sql_answers(settings), SQL_START_TIMEOUT, "The SQL endpoint", service)
    except BaseException:
        stop(service)
        state = StateFile(settings.state_dir)
        with state.locked():
            state.write([s for s in state.read() if s.pid != service.pid])
        raise
    return service


def start_app(
    settings: Settings, name: str, argv: list[str], env: Mapping[str, str] | None = None, user: str | None = None
) -> Service:
    """Start one of fleetstream's own jobs (simulator, stream, dashboard) as part of the stack.

    It is recorded with the stack, so `down` and the foreground supervisor stop it too. With the
    secure local broker it connects as ``user`` (one of its service users; default: as this process).
    """
    if user is not None and settings.kafka.secure:
        base = os.environ if env is None else env
        drop = {f"{ENV_PREFIX}KAFKA__SASL_PASSWORD", f"{ENV_PREFIX}KAFKA__SASL_PASSWORD_FILE"}
        env = {**{k: v for k, v in base.items() if k not in drop}, f"{ENV_PREFIX}KAFKA__SASL_USERNAME": user}
    if user in S3_SERVICE_ACTIONS and settings.s3.managed and settings.s3.access_key_id is None:
        env = {**(os.environ if env is None else env), f"{ENV_PREFIX}S3__USER": user}  # its own S3 identity
    state = StateFile(settings.state_dir)
    with state.locked():
        service = spawn(name, argv, settings.state_dir / "logs" / f"{name}.log", address="-", env=env)
        state.write([*state.read(), service])
    log.info("%s started (pid %d), log: %s", name, service.pid, service.log)
    return service


def stop_in_order(services: Sequence[Service], say: bool = False) -> None:
    """Stop services: fleetstream's own jobs and the servers beside them (the stream, the simulator,
    the dashboard, MLflow, Airflow, the SQL endpoint, the ops apps) first and at the same time, none
    waiting on another's stop; then the infrastructure they used (the Kafka broker, S3, the Spark
    cluster) in the order given (newest first), the nodes of a Kafka cluster together, where the last
    of them comes; one after the other, the last node would wait on a quorum gone until killed."""
    apps = [s for s in services if not _infrastructure(s.name)]
    if say and apps:
        log.info("stopping %s", ", ".join(f"{s.name} (pid {s.pid})" for s in apps))
    errors: list[BaseException] = []

    def stop_one(app: Service) -> None:
        try:
            _stop(app)
        except BaseException as exc:  # (raised below, after the others stopped)
            errors.append(exc)

    threads = [threading.Thread(target=stop_one, args=(app,), daemon=True) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:  # (`down` then keeps the record: nothing is forgotten that may still run)
        raise errors[0]
    rest = [s for s in services if _infrastructure(s.name)]
    kafka = [s for s in rest if kafka_broker.is_node_name(s.name)]
    for service in rest:
        together = kafka if service in kafka else [service]
        if service is not together[-1]:
            continue
        if say:
            log.info("stopping %s", ", ".join(f"{s.name} (pid {s.pid})" for s in together))
        _stop(*together)


def _infrastructure(name: str) -> bool:
    """Whether a service is one the others use: a Kafka node, the S3 server, the Spark cluster.

    >>> [_infrastructure(n) for n in ("kafka-2", S3, spark_cluster.MASTER, "spark-worker-1", STREAM, MLFLOW)]
    [True, True, True, True, False, False]
    """
    return kafka_broker.is_node_name(name) or name == S3 or spark_cluster.is_part_name(name)


def _stop(*services: Service) -> None:
    """SIGTERM to services together, then the wait (their grace: ``STOP_GRACE_S``), then SIGKILL."""
    first = services[0].name
    stop_together(services, timeout=STOP_GRACE_S.get(first, process.STOP_GRACE_S), group=first not in LEADER_STOPS)


def down(settings: Settings) -> list[Service]:
    """Stop every process this state directory's stack started (and nothing else)."""
    state = StateFile(settings.state_dir)
    with state.locked():
        services = state.read()
        alive = [s for s in services if s.alive()]
        stop_in_order(list(reversed(alive)), say=True)
        state.clear()
        return alive


def status(settings: Settings) -> StackStatus:
    """Each part with pid, address and health; the topics with partitions and end offsets."""
    recorded = {s.name: s for s in StateFile(settings.state_dir).read()}
    parts = []
    if settings.kafka.managed:
        answering = broker_count(settings.kafka)
        for node in range(1, settings.kafka.brokers + 1):
            name = kafka_broker.node_name(node)
            service = recorded.get(name)
            alive = service is not None and service.alive()
            healthy = alive and answering > 0
            detail = "running" if healthy else ("not answering" if alive else "stopped")
            if healthy and settings.kafka.brokers > 1:
                detail += f" ({answering} of {settings.kafka.brokers} nodes answer)"
            if healthy and settings.kafka.secure:
                detail += ": SASL_SSL, SCRAM users, ACLs"
            pid = service.pid if alive and service else None
            address = settings.kafka.bootstrap if settings.kafka.brokers == 1 else service_address(settings, node)
            parts.append(PartStatus(name, True, address, healthy, pid, detail))
    else:
        healthy = broker_count(settings.kafka) > 0
        parts.append(
            PartStatus(
                KAFKA,
                False,
                settings.kafka.bootstrap,
                healthy,
                None,
                "external" if healthy else "unreachable",
            )
        )
    s3_service = recorded.get(S3)
    if not settings.s3.managed or s3_service is not None:
        alive = s3_service is not None and s3_service.alive()
        healthy = (alive or not settings.s3.managed) and seaweedfs.bucket_ready(settings)
        detail = ("running" if healthy else "stopped") if settings.s3.managed else "external"
        pid = s3_service.pid if alive and s3_service else None
        parts.append(PartStatus(S3, settings.s3.managed, settings.s3.endpoint, healthy, pid, detail))
    mlflow_service = recorded.get(MLFLOW)
    if not settings.mlflow.managed or mlflow_service is not None:
        alive = mlflow_service is not None and mlflow_service.alive()
        healthy = (alive or not settings.mlflow.managed) and mlflow_server.healthy(settings.mlflow.uri)
        detail = ("running" if healthy else "stopped") if settings.mlflow.managed else "external"
        pid = mlflow_service.pid if alive and mlflow_service else None
        parts.append(PartStatus(MLFLOW, settings.mlflow.managed, settings.mlflow.uri, healthy, pid, detail))
    parts += _airflow_parts(settings, recorded)
    parts += _spark_parts(settings, recorded)
    sql_service = recorded.get(SQL)
    if sql_service is not None:
        alive = sql_service.alive()
        healthy = alive and sql_answers(settings)
        detail = "running" if healthy else ("starting" if alive else "stopped")
        parts.append(PartStatus(SQL, True, settings.sql.url, healthy, sql_service.pid if alive else None, detail))
    for name in OPS_APPS:  # notifications and the bot, when `run` started them
        service = recorded.get(name)
        if service is not None:
            alive = service.alive()
            parts.append(PartStatus(name, True, "-", alive, service.pid if alive else None,
                                    "running" if alive else "stopped"))  # fmt: skip
    topics = (
        describe_topics(settings.kafka, settings.kafka.topics.all())
        if any(p.healthy for p in parts if p.name.startswith(KAFKA))
        else []
    )
    return StackStatus(parts, topics)


def _spark_parts(settings: Settings, recorded: Mapping[str, Service]) -> list[PartStatus]:
    """The local Spark cluster's master and workers, when this stack started them."""
    if not any(name in recorded for name in spark_cluster.names(settings)):
        return []
    answer = spark_cluster.master_state(settings)
    registered = int(answer.get("aliveworkers", 0)) if answer else 0  # type: ignore[call-overload]
    parts = []
    for name in spark_cluster.names(settings):
        service = recorded.get(name)
        alive = service is not None and service.alive()
        healthy = alive and answer is not None
        detail = "stopped" if not alive else ("not answering" if answer is None else "running")
        if healthy and name == spark_cluster.MASTER:
            detail += f" ({registered} of {settings.spark.workers} workers registered)"
        address = service.address if service is not None else "-"
        parts.append(PartStatus(name, True, address, healthy, service.pid if alive and service else None, detail))
    return parts


def service_address(settings: Settings, node: int) -> str:
    return f"{LOCAL_HOST}:{settings.kafka.node_ports(node)[0]}"


def _airflow_parts(settings: Settings, recorded: Mapping[str, Service]) -> list[PartStatus]:
    """The local Airflow's processes when this stack started them; an external Airflow as one part."""
    if not settings.airflow.managed:
        healthy = airflow_server.health(settings.airflow.base_url) is not None
        return [PartStatus("airflow", False, settings.airflow.base_url, healthy, None,
                           "external" if healthy else "unreachable")]  # fmt: skip
    if not any(name in recorded for name in airflow_server.PROCESSES):
        return []
    answer = airflow_server.health(settings.airflow.base_url)
    parts = []
    for name in airflow_server.PROCESSES:
        service = recorded.get(name)
        alive = service is not None and service.alive()
        healthy = alive and airflow_server.part_healthy(answer, name)
        detail = "running" if healthy else ("not healthy" if alive else "stopped")
        pid = service.pid if alive and service else None
        parts.append(PartStatus(name, True, settings.airflow.base_url, healthy, pid, detail))
    return parts


def supervise(services: list[Service], settings: Settings, on_stop: Callable[[str], None]) -> int:
    """Block until Ctrl-C/SIGTERM (exit 0) or until a service dies (exit 1); then stop the stack."""
    stop_requested = threading.Event()
    reason: list[str] = []

    def _handle(signum: int, _frame: FrameType | None) -> None:
        reason.append(signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = 0
        while not stop_requested.wait(1.0):
            dead = [s for s in services if not s.alive()]
            if dead:
                reason.append(f"{dead[0].name} exited unexpectedly (see {dead[0].log})")
                code = 1
                break
        on_stop(reason[0] if reason else "stop requested")
        down(settings)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
