"""Plain-process supervision for the local stack: spawn, record, probe and stop by pid.

Each service runs in a session of its own (so a Ctrl-C in the terminal reaches only the supervisor,
which then stops services in order) and is recorded in ``<state_dir>/stack.json`` with its pid and
start time. A recorded pid counts as ours only while its start time matches, so a pid that the
kernel reused for an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from fleetstream.errors import FleetstreamError

log = logging.getLogger(__name__)
STATE_FILE = "stack.json"
# Children this process spawned, kept so they can be reaped (no zombies) when stopped here; a detached
# service outlives this process and is then reaped by init.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


#: how far a process's start time may drift between two readings and still be the same process
CREATE_TIME_SLACK_S = 2.0
#: seconds from SIGTERM to SIGKILL when a service is stopped
STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Service:
    """A process the stack started."""

    name: str
    pid: int
    create_time: float
    address: str
    log: str
    #: the kernel's start time in clock ticks since boot (None in a stack.json of an older version)
    start_ticks: int | None = None

    def process(self) -> psutil.Process | None:
        """The live process, or None when it has exited (or the pid now belongs to another one)."""
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            # The identity is the kernel's start tick, which no clock step moves. A wall-clock start
            # time is derived from the boot time, which shifts when the clock is stepped (as on a VM).
            # CI once saw live children taken for gone (a parent stopped everything, `down` left a
            # Spark master running); a step is the likely cause, not a proven one. Records without
            # ticks fall back to the wall clock, with some slack.
            if self.start_ticks is not None:
                return proc if start_ticks(self.pid) == self.start_ticks else None
            if abs(proc.create_time() - self.create_time) > CREATE_TIME_SLACK_S:
                return None
        except psutil.Error:
            return None
        return proc

    def alive(self) -> bool:
        return self.process() is not None


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    address: str,
    env: Mapping[str, str] | None = None,
    own_session: bool = True,
) -> Service:
    """Start ``argv`` with output appended to ``log``, in its own session, or (not ``own_session``)
    in this session but a process group of its own: either way the terminal's Ctrl-C does not
    reach it. Linux shares CPU time fairly between sessions (autogroups) and applies ``nice`` only
    within one, so a child whose CPU priority must count against this process's stays in its session."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
            process_group=None if own_session else 0,
            env=dict(env) if env is not None else None,
            close_fds=True,
        )
    _CHILDREN[popen.pid] = popen
    proc = psutil.Process(popen.pid)
    return Service(name, popen.pid, proc.create_time(), address, str(log), start_ticks(popen.pid))


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``'s 22nd field): unlike
    a wall-clock start time, unchanged when the clock is stepped. None when there is no such process.

    >>> start_ticks(os.getpid()) == start_ticks(os.getpid()) is not None
    True
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command's name (field 2) is in parentheses and may hold spaces or parentheses itself
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file only its owner can read (mode 0600: passwords, keys, configurations holding
    them): written whole beside it, then renamed over it, so the mode holds over an older file and
    no reader sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def stop(service: Service, timeout: float = STOP_GRACE_S, group: bool = True) -> None:
    """SIGTERM the service's process group (only its leader when not ``group``: a supervisor that
    stops its own children in order), then SIGKILL what is left after ``timeout`` seconds."""
    stop_together([service], timeout, group)


def stop_together(services: Sequence[Service], timeout: float = STOP_GRACE_S, group: bool = True) -> None:
    """:func:`stop` for several services at once: each is sent SIGTERM, then all are waited for
    together. The nodes of a Kafka cluster stop so in seconds; one after the other, the last one
    waits on a controller quorum that has gone until it is killed."""
    members, pids = [], []
    for service in services:
        proc = service.process()
        if proc is None:
            continue
        members += [proc, *proc.children(recursive=True)]
        pids.append(service.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(service.pid, signal.SIGTERM)
            else:
                os.kill(service.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=timeout)
    stuck = [s.name for s in services if any(p.pid == s.pid for p in alive)]
    if stuck:
        log.warning("%s did not stop within %.0f s of SIGTERM: killed", ", ".join(stuck), timeout)
    leaders = {s.pid for s in services}
    for member in alive:
        if member.pid not in leaders:  # a child left behind by a leader that has stopped (its JVM, say)
            with contextlib.suppress(psutil.Error):
                log.warning("process %d (%s) did not stop within %.0f s: killed", member.pid,
                            " ".join(member.cmdline()[:3]), timeout)  # fmt: skip
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
    for pid in pids:
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=5)


def port_owner(port: int) -> str:
    """A short description of the process listening on ``port``, if this user may see it."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"{proc.name()} (pid {conn.pid})"
    return "another process"


def port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now.

    SO_REUSEADDR as servers set it: connections of a stopped server lingering in TIME_WAIT do not
    make the port look taken; a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def wait_until(check: Callable[[], bool], timeout: float, what: str, service: Service | None = None) -> None:
    """Poll ``check`` until it is true; fail with the service's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise FleetstreamError(f"{what} exited during start-up. Last lines of {service.log}:\n{tail(service.log)}")
        if check():
            return
        time.sleep(0.25)
    hint = f" Last lines of {service.log}:\n{tail(service.log)}" if service else ""
    raise FleetstreamError(f"{what} did not become healthy within {timeout:.0f} s.{hint}")


def tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class StateFile:
    """The record of what the stack started, under ``state_dir``; guarded by an exclusive lock."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE

    def read(self) -> list[Service]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [Service(**item) for item in raw.get("services", [])]

    def write(self, services: Sequence[Service]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": [asdict(s) for s in services]}, indent=2), encoding="utf-8")
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the stack lock: one `up` or `down` at a time per state directory."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "stack.lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FleetstreamError(
                    f"Another `fleetstream up` or `down` is working on {self.state_dir} right now. "
                    "Wait for it to finish, then try again."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
