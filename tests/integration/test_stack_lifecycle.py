"""`fleetstream up / status / down` as a user runs them: separate processes, checked by pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import fleetstream
from fleetstream.config import KafkaSettings
from fleetstream.ingest.kafka import make_producer
from fleetstream.testing import free_port_base

pytestmark = pytest.mark.integration

FLEETSTREAM = str(Path(sys.executable).parent / "fleetstream")


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a private stack: own state directory and free ports; torn down afterwards."""
    kafka_port = free_port_base(2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEETSTREAM_")},
        "FLEETSTREAM_STATE_DIR": str(tmp_path / "state"),
        "FLEETSTREAM_KAFKA__PORT": str(kafka_port),
        "FLEETSTREAM_KAFKA__CONTROLLER_PORT": str(kafka_port + 1),
        "FLEETSTREAM_S3__PORT": str(free_port_base(5, grpc_offset=10000)),
        "COLUMNS": "200",
    }
    yield env
    subprocess.run([FLEETSTREAM, "down"], env=env, cwd=tmp_path, capture_output=True, timeout=120, check=False)


def run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETSTREAM, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def processes_under(state_dir: str) -> list[psutil.Process]:
    """Every live process whose command line mentions the state directory."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if state_dir in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


def test_up_detach_status_down_leaves_nothing(stack_env: dict[str, str]) -> None:
    started = run(stack_env, "up", "--detach", "--s3")
    assert started.returncode == 0, started.stderr

    status = run(stack_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    pids = {part["name"]: part["pid"] for part in report["parts"]}
    assert set(pids) == {"kafka", "seaweedfs"}
    assert all(psutil.pid_exists(pid) for pid in pids.values())
    assert {t["name"]: t["partitions"] for t in report["topics"]} == {
        "sensors-sample": 4, "samples-enriched": 4, "alert-data": 4, "sensors-dlq": 4, "driver-commands": 4,
    }  # fmt: skip

    twin = run(stack_env, "up", "--detach", "--s3")
    assert twin.returncode == 1
    assert "already running" in twin.stderr
    assert sorted(p.pid for p in processes_under(stack_env["FLEETSTREAM_STATE_DIR"])) == sorted(pids.values())

    stopped = run(stack_env, "down")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert processes_under(stack_env["FLEETSTREAM_STATE_DIR"]) == []
    after = run(stack_env, "status")
    assert after.returncode == 1
    assert "stopped" in after.stdout


def test_restart_keeps_topics_and_messages(stack_env: dict[str, str]) -> None:
    assert run(stack_env, "up", "--detach").returncode == 0
    kafka = KafkaSettings(port=int(stack_env["FLEETSTREAM_KAFKA__PORT"]))
    producer = make_producer(kafka)
    for i in range(25):
        producer.produce("sensors-sample", key=f"car-{i}", value=b"{}")
    assert producer.flush(30) == 0
    assert run(stack_env, "down").returncode == 0

    again = run(stack_env, "up", "--detach")
    assert again.returncode == 0, again.stderr
    report = json.loads(run(stack_env, "status", "--json").stdout)
    sensors = next(t for t in report["topics"] if t["name"] == "sensors-sample")
    assert sum(sensors["end_offsets"]) == 25


def test_taken_port_fails_clearly_and_starts_nothing(stack_env: dict[str, str]) -> None:
    port = int(stack_env["FLEETSTREAM_S3__PORT"]) + 2  # SeaweedFS volume port: checked before Kafka starts
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run(stack_env, "up", "--detach", "--s3")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"Port {port} on 127.0.0.1, needed for the SeaweedFS volume, is already in use" in message
    assert "FLEETSTREAM_S3__PORT" in message
    assert "Nothing was started" in message
    assert processes_under(stack_env["FLEETSTREAM_STATE_DIR"]) == []


@contextlib.contextmanager
def supervisor(
    args: list[str], env: dict[str, str], log_path: Path, timeout: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """A foreground `fleetstream` command, returned once it says it is running; killed if left over."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [FLEETSTREAM, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and "press Ctrl-C" not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.5)
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_foreground_up_stops_everything_on_ctrl_c(stack_env: dict[str, str], tmp_path: Path) -> None:
    with supervisor(["up"], stack_env, tmp_path / "up.log") as process:
        children = processes_under(stack_env["FLEETSTREAM_STATE_DIR"])
        assert len(children) == 1  # the broker (no --s3)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    assert processes_under(stack_env["FLEETSTREAM_STATE_DIR"]) == []
    assert "stopping: SIGINT" in (tmp_path / "up.log").read_text()


def test_external_kafka_is_checked_not_started(stack_env: dict[str, str]) -> None:
    unreachable = {**stack_env, "FLEETSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port_base(1)}"}
    result = run(unreachable, "up", "--detach")
    assert result.returncode == 1
    assert "did not answer within 10 s" in " ".join(result.stderr.split())
    assert processes_under(stack_env["FLEETSTREAM_STATE_DIR"]) == []


def test_run_starts_stack_simulator_pipeline_and_dashboard_and_ctrl_c_stops_all(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """`make run`'s command starts every part: the stack, the simulator, the stream, the dashboard,
    MLflow and Airflow (its password shown once); `status` lists each part healthy; Ctrl-C stops all.

    With --secure: the broker takes SASL_SSL only, and each application connects as its own user,
    which the ACLs hold to its own topics (so the data flowing shows that those rights suffice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dashboard_port = probe.getsockname()[1]
    env = {**stack_env, "FLEETSTREAM_LAKE__ROOT": str(tmp_path / "lake"), "FLEETSTREAM_SIM_CARS": "20",
           "FLEETSTREAM_STREAM_TRIGGER_SECONDS": "1", "FLEETSTREAM_DASHBOARD__PORT": str(dashboard_port),
           "FLEETSTREAM_MLFLOW__PORT": str(free_port_base(1)),
           "FLEETSTREAM_AIRFLOW__PORT": str(free_port_base(1))}  # fmt: skip
    with supervisor(["run", "--secure"], env, tmp_path / "run.log", timeout=300) as process:
        env["FLEETSTREAM_KAFKA__SECURE"] = "true"  # the other commands reach the secure broker too
        deadline = time.monotonic() + 60
        produced = 0
        while time.monotonic() < deadline and produced < 60:  # 20 cars at 1 Hz: three seconds' worth
            report = json.loads(run(env, "status", "--json").stdout)
            produced = next(sum(t["end_offsets"]) for t in report["topics"] if t["name"] == "sensors-sample")
            time.sleep(1)
        assert produced >= 60
        assert (tmp_path / "lake" / "dims" / "cars.json").read_text().count("\n") == 20
        recorded = json.loads((Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "stack.json").read_text())["services"]
        pids = {s["name"]: s["pid"] for s in recorded}
        airflow = {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor"}  # started last, healthy
        assert set(pids) == {"kafka", "simulator", "stream", "dashboard", "mlflow", *airflow}
        # MLflow and Airflow started after the stream's queries each wrote a batch (or the wait's limit)
        said = (tmp_path / "run.log").read_text()
        assert "starting the rest" in said, said[-3000:]
        assert said.index("starting the rest") < said.index("MLflow: ")
        users = {name: psutil.Process(pids[name]).environ().get("FLEETSTREAM_KAFKA__SASL_USERNAME")
                 for name in ("simulator", "stream", "dashboard")}  # fmt: skip
        assert users == {"simulator": "simulator", "stream": "pipeline", "dashboard": "dashboard"}
        assert report["healthy"] is True, report["parts"]
        assert {p["name"] for p in report["parts"]} == {"kafka", "mlflow", *airflow}
        password = json.loads((Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "airflow" / "passwords.json").read_text())
        assert (
            oct(os.stat(Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "airflow" / "passwords.json").st_mode)[-3:] == "600"
        )
        assert (tmp_path / "run.log").read_text().count(password["admin"]) == 1  # shown once, at its creation
        health = f"http://127.0.0.1:{dashboard_port}/_stcore/health"
        while time.monotonic() < deadline + 60 and not _answers(health):
            time.sleep(1)
        assert _answers(health), "the dashboard does not answer"
        assert f"http://127.0.0.1:{dashboard_port}" in (tmp_path / "run.log").read_text()
        silver = tmp_path / "lake" / "silver" / "telemetry" / "_delta_log"
        while time.monotonic() < deadline + 120 and not any(silver.glob("*.json")):
            time.sleep(1)
        assert any(silver.glob("*.json")), (
            Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "logs" / "stream.log"
        ).read_text()
        assert all(psutil.pid_exists(pid) for pid in pids.values())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=150) == 0
    assert processes_under(stack_env["FLEETSTREAM_STATE_DIR"]) == []
    assert not any(psutil.pid_exists(pid) for pid in pids.values())
    assert "did not stop within" not in (tmp_path / "run.log").read_text()  # each part stopped, none killed
    simulator_log = Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "logs" / "simulator.log"
    assert "failed 0" in simulator_log.read_text()
    # the stream stopped its queries, its publisher and its JVM itself (SIGTERM to its Python alone)
    stream_log = (Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "logs" / "stream.log").read_text()
    assert "alert-data publisher stopped" in stream_log, stream_log[-3000:]
    assert "pipeline stopped" in stream_log, stream_log[-3000:]
    # no traceback, but those Spark's own Python workers print: one started too late to connect back
    # (two busy cores; Spark waits 10 s), its query restarted for it (the log says so), or one whose
    # query was stopping (its socket closed under it)
    assert _unexpected_tracebacks(stream_log) == [], stream_log[-3000:]
    _no_secret_leaked(Path(stack_env["FLEETSTREAM_STATE_DIR"]), env, tmp_path / "run.log", password["admin"])


def test_run_terminated_while_it_starts_stops_what_it_started(stack_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM (a service manager's stop, `kill`) while `run` waits for the lake's first batch: every
    process it had started is stopped, and it says so (before, Python's default for SIGTERM ended it
    at once and left the broker, the stream, the simulator and the dashboard running)."""
    env = {**stack_env, "FLEETSTREAM_LAKE__ROOT": str(tmp_path / "lake"), "FLEETSTREAM_SIM_CARS": "5",
           "FLEETSTREAM_DASHBOARD__PORT": str(free_port_base(1)), "FLEETSTREAM_RUN_AIRFLOW": "false"}  # fmt: skip
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([FLEETSTREAM, "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "dashboard: http" not in log_path.read_text():  # then it waits
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.2)
        assert "dashboard: http" in log_path.read_text(), log_path.read_text()
        recorded = json.loads((Path(stack_env["FLEETSTREAM_STATE_DIR"]) / "stack.json").read_text())["services"]
        pids = {s["name"]: s["pid"] for s in recorded}
        assert set(pids) == {"kafka", "stream", "simulator", "dashboard"}, log_path.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 130, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    said = log_path.read_text()
    assert "interrupted during start-up; what had started was stopped" in said, said[-3000:]
    assert "MLflow: " not in said
    assert not any(psutil.pid_exists(pid) for pid in pids.values()), said[-3000:]
    assert processes_under(stack_env["FLEETSTREAM_STATE_DIR"]) == []


#: what Spark's own Python workers raise when their socket to the JVM closes or never opens (a worker
#: started too late to connect back, or one whose query was stopping)
WORKER_SOCKET_ERRORS = ("[CANNOT_OPEN_SOCKET]", "EOFError", "BrokenPipeError", "ConnectionResetError")


def _unexpected_tracebacks(log: str, ours: str = str(Path(fleetstream.__file__).parent)) -> list[str]:
    r"""The tracebacks of ``log`` other than those of Spark's Python workers losing their socket (no
    frame of ``ours``, fleetstream's package; a socket error) after a late worker's query was
    restarted (said before or after it) or while the queries were stopping. A traceback inside
    another line (a Java exception's message) is never expected.

    >>> worker = "Traceback (most recent call last):\n  File \"/x/pyspark.zip/pyspark/worker_util.py\"\nEOFError\n"
    >>> mine = "Traceback (most recent call last):\n  File \"/src/fleetstream/cli/stack.py\"\nEOFError\n"
    >>> late = "WARNING fleetstream: query episodes failed, the machine too busy to start a Python worker\n"
    >>> len(_unexpected_tracebacks(worker)), _unexpected_tracebacks("fleetstream: stopping 2 queries\n" + worker)
    (1, [])
    >>> _unexpected_tracebacks(worker + late)  # (the restart is logged once the worker's error is in)
    []
    >>> len(_unexpected_tracebacks("fleetstream: stopping 2 queries\n" + mine, ours="/src/fleetstream"))
    1
    >>> len(_unexpected_tracebacks(late + worker.replace("EOFError", "KeyError: 'speed'")))
    1
    >>> len(_unexpected_tracebacks(late + "py4j.Py4JException: Return Message: Traceback (most recent call last):"))
    1
    """
    lines = log.splitlines()
    late = "too busy to start a Python worker" in log
    unexpected = [line for line in lines if "Traceback" in line and not line.startswith("Traceback (most recent")]
    for start, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        end = start + 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        block = lines[start : end + 1]
        frames = [frame for frame in block if frame.lstrip().startswith("File ")]
        raised = block[-1] if end < len(lines) else ""
        spark_worker = any("/pyspark" in f for f in frames) and not any(ours in f for f in frames)
        socket = any(error in raised for error in WORKER_SOCKET_ERRORS)
        stopping = any(" stopping " in earlier for earlier in lines[:start])
        if not (spark_worker and socket and (late or stopping)):
            unexpected.append("\n".join(block))
    return unexpected


def _no_secret_leaked(state: Path, env: dict[str, str], run_log: Path, shown_once: str) -> None:
    """No secret of a secured run (Kafka users' and the keystore's passwords, S3 secret keys, the
    Airflow admin's password but where `run` shows it once) in any log, the stream's status file,
    or `fleetstream config`."""
    secrets = [p.read_text().strip() for p in (state / "kafka" / "users").iterdir()]
    secrets.append((state / "kafka" / "tls" / "broker.p12.password").read_text().strip())
    for keys in (state / "seaweedfs").glob("credentials*.json"):
        secrets.append(json.loads(keys.read_text())["secret_access_key"])
    texts = {str(p): p.read_text(errors="replace") for p in state.rglob("*.log")}
    texts[str(run_log)] = run_log.read_text().replace(shown_once, "", 1)
    texts["stream-status.json"] = (state / "stream-status.json").read_text()
    config = run(env, "config")
    texts["`fleetstream config`"] = config.stdout + config.stderr
    assert "SASL_SSL" in texts["`fleetstream config`"]
    assert any(name.endswith("stream.log") for name in texts)
    assert len(secrets) >= 6
    every = [*secrets, shown_once]
    leaks = [(name, which) for name, text in texts.items() for which, secret in enumerate(every) if secret in text]
    assert leaks == []
