"""Run TorchServe and the KServe front on this machine: start, wait until ready, stop.

``make serve`` and ``make stop`` call this module; the integration tests and
``scripts/bench_serve.py`` use :class:`LocalServing` directly, on free loopback ports.

Each instance keeps its state in one folder (``.serve/`` for ``make serve``): pid files,
logs (``logs/``: TorchServe's ``ts_log.log``, ``model_log.log`` and the front's ``front.log``)
and a private temp folder. TorchServe writes its pid file and worker sockets under the temp
folder, so two instances on one machine do not see each other.

Usage::

    python -m handler.local_serving start [--config gs/config/config.properties]
    python -m handler.local_serving status
    python -m handler.local_serving stop

``start`` checks every port the two servers will bind before it starts anything; on a half
running instance (one of the two died) it stops the survivor and starts both afresh, and it
restarts a running pair whose .mar or config changed since it started (``make serve`` rebuilds
a stale .mar first).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import requests

from handler.kserve_front import loopback_url, model_names, read_properties

logger = logging.getLogger("kplate.serve")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "gs" / "config" / "config.properties"
DEFAULT_MODEL_STORE = REPO_ROOT / "gs" / "model-store"
DEFAULT_STATE_DIR = REPO_ROOT / ".serve"
PROCESSES = ("torchserve", "front")
#: In the state folder: the config and archives a start served (size, mtime), so that a later
#: ``start`` finds a running pair serving files since rebuilt.
SERVED_FILE = "served.json"
#: How each process is named in messages.
LABELS = {"torchserve": "TorchServe", "front": "the KServe front"}
#: ... and at the start of a status line.
TITLES = {"torchserve": "TorchServe", "front": "KServe front"}
#: Log lines that likely name why a process stopped, most telling first.
CAUSE_PATTERNS = (
    re.compile(r"address already in use|Errno", re.IGNORECASE),
    re.compile(r"Error|Exception"),
)
#: TorchServe's own defaults where config.properties sets no address.
TS_DEFAULT_ADDRESSES = {
    "inference_address": "http://127.0.0.1:8080",
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://127.0.0.1:8082",
}
TS_DEFAULT_GRPC = {"grpc_inference": 7070, "grpc_management": 7071}
#: Exit statuses of the command line (documented in its --help).
EXIT_HELP = """exit status:
  start   0 when both servers are ready (or were already running), 1 when they could not be
          started: a port in use, java or the .mar missing, a server that exited or was not
          ready in time (the first line of the message says why). A half running instance
          (one server died) is stopped and started afresh, and so is a running pair whose
          .mar or config changed since it started.
  status  0 when TorchServe and the front both run, 1 otherwise (one of them, or neither).
  stop    0, also when nothing was running.
"""


class ServingError(RuntimeError):
    """A server could not be started, did not get ready, or died."""


class PortInUseError(ServingError):
    """A port one of the servers must bind is taken (or configured twice) before start-up."""


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_java() -> str:
    """Path of the ``java`` TorchServe will run (``$JAVA_HOME/bin/java`` or on ``PATH``).

    Raises:
        ServingError: no Java runtime.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise ServingError(
            "java not found: TorchServe needs Java 11+ (apt-get install openjdk-17-jre-headless)"
        )
    return found


@dataclass(frozen=True)
class Binding:
    """One listening socket a server of this instance opens."""

    what: str
    host: str
    port: int
    setting: str


def _address_binding(what: str, key: str, address: str) -> Binding | None:
    parts = urlsplit(address)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Binding(what, parts.hostname, port, key)


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound now (``None`` when it can).

    ``SO_REUSEADDR`` as TorchServe and uvicorn set it: a port left in ``TIME_WAIT`` by a
    server stopped a moment ago is free, one another socket listens on is not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc
    return None


def port_holder(port: int) -> str | None:
    """Which process listens on TCP ``port``, as ``pid N (command line)``, read from ``/proc``.

    ``None`` when no listening socket is found; a socket whose process this user may not
    inspect is named as such.
    """
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # fields: sl, local address (hex ip:port), remote address, state (0A: LISTEN), ...
            if len(fields) > 9 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = str(fd.readlink())
            except OSError:
                continue
            if link in inodes:
                pid = int(fd_dir.parent.name)
                return f"pid {pid} ({_command_line(pid)})"
    return "a process this user cannot inspect"


def _command_line(pid: int, width: int = 80) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class Ports:
    """The ports of one local instance."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int
    front: int

    @classmethod
    def free(cls) -> Ports:
        """Six distinct free loopback ports."""
        ports: set[int] = set()
        while len(ports) < 6:
            ports.add(free_port())
        return cls(*sorted(ports))


def render_config(
    template: Path, out: Path, ports: Ports, *, overrides: dict[str, str] | None = None
) -> Path:
    """Write a copy of ``template`` bound to loopback on ``ports`` (plus ``overrides``).

    Keys are replaced in place, so the comments and the order of the template survive.
    """
    values = {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": f"http://127.0.0.1:{ports.management}",
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        **(overrides or {}),
    }
    lines, seen = [], set()
    for line in template.read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in values:
            lines.append(f"{key}={values[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in values.items() if k not in seen]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


class LocalServing:
    """TorchServe plus the KServe front, as child processes in their own process groups.

    Use as a context manager, or call :meth:`start` and :meth:`stop`; the processes outlive
    this object only when started with ``detach=True`` (``make serve``).
    """

    def __init__(
        self,
        config: Path = DEFAULT_CONFIG,
        model_store: Path = DEFAULT_MODEL_STORE,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        front_port: int = 8080,
        env: dict[str, str] | None = None,
        front: bool = True,
    ) -> None:
        """Describe an instance; nothing starts until :meth:`start`. ``front=False`` runs
        TorchServe alone (as in a KServe pod, where KServe's own wrapper is the front)."""
        self.processes = PROCESSES if front else PROCESSES[:1]
        self.config = Path(config).resolve()
        self.model_store = Path(model_store).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.front_port = front_port
        self.env = {**os.environ, **(env or {})}
        props = read_properties(self.config)
        self.properties = props
        self.model_name = model_names(props)[0]
        self.inference_url = loopback_url(props.get("inference_address", "http://127.0.0.1:8080"))
        self.management_url = loopback_url(props.get("management_address", self.inference_url))
        self.metrics_url = loopback_url(props.get("metrics_address", "http://127.0.0.1:8082"))
        self.front_url = f"http://127.0.0.1:{front_port}"
        # Size of each log when start() began: the cause of a failed start-up is looked for
        # in what this start-up wrote, not in earlier runs' lines (the logs are appended to).
        self._log_marks: dict[str, int] = {}

    @property
    def log_dir(self) -> Path:
        """Where TorchServe's and the front's logs go."""
        return self.state_dir / "logs"

    def _pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def running(self) -> dict[str, int]:
        """The live processes of this instance, by name (stale pid files are removed)."""
        alive = {}
        for name in PROCESSES:
            pid_file = self._pid_file(name)
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text().strip() or 0)
            if pid > 0 and _is_ours(pid):
                alive[name] = pid
            else:
                pid_file.unlink(missing_ok=True)
        return alive

    def bindings(self) -> list[Binding]:
        """Every socket the servers will listen on: the front's port and TorchServe's
        inference, management, metrics and gRPC ports, as config.properties sets them (else
        TorchServe's defaults). Addresses TorchServe shares (same host and port) appear once.
        """
        props = self.properties
        found: list[Binding] = []
        if "front" in self.processes:
            found.append(Binding("the KServe front", "0.0.0.0", self.front_port, "--front-port"))
        for key, default in TS_DEFAULT_ADDRESSES.items():
            what = f"TorchServe's {key.removesuffix('_address')} API"
            binding = _address_binding(what, key, props.get(key, default))
            if binding is not None:
                found.append(binding)
        for api, default_port in TS_DEFAULT_GRPC.items():
            port = int(props.get(f"{api}_port", default_port))
            host = props.get(f"{api}_address", "127.0.0.1")
            found.append(Binding(f"TorchServe's {api} API", host, port, f"{api}_port"))
        unique: list[Binding] = []
        for binding in found:
            if all((b.host, b.port) != (binding.host, binding.port) for b in unique):
                unique.append(binding)
        return unique

    def check_ports(self) -> None:
        """Fail before anything starts when a port is taken or configured twice.

        Raises:
            PortInUseError: one line naming the port, what needs it and, where ``/proc``
                tells, the process that holds it.
        """
        by_port: dict[int, Binding] = {}
        for binding in self.bindings():
            other = by_port.setdefault(binding.port, binding)
            if other is not binding:
                raise PortInUseError(
                    f"port {binding.port} is configured for both {other.what} and "
                    f"{binding.what}: change {binding.setting} ({self.config})"
                )
            error = bind_error(binding.host, binding.port)
            if error is None:
                continue
            where = binding.setting
            if where != "--front-port":
                where = f"{where} in {self.config}"
            if error.errno == errno.EADDRINUSE:
                holder = port_holder(binding.port)
                held = f" by {holder}" if holder else ""
                raise PortInUseError(
                    f"port {binding.port} ({binding.what}) is already in use{held}: stop "
                    f"that process, or move {binding.what} to a free port ({where})"
                )
            raise PortInUseError(
                f"cannot bind {binding.host}:{binding.port} ({binding.what}): "
                f"{error.strerror or error} (change {where})"
            )

    def start(self, timeout_s: float = 300.0) -> None:
        """Check the ports, start TorchServe and the front, and wait until the front (without
        one, TorchServe's ``/ping``) reports ready.

        Raises:
            PortInUseError: a port is taken (nothing was started).
            ServingError: already running, java missing, no .mar, a process died, or not
                ready in time.
        """
        if self.running():
            raise ServingError(f"already running (state in {self.state_dir}); stop it first")
        self.check_ports()
        java = find_java()
        for mar in self.mar_paths():
            if not mar.is_file():
                raise ServingError(f"{mar} missing: run `make mar`")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_marks = {p.name: p.stat().st_size for p in self.log_dir.glob("*.log")}
        tmp = self.state_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        # No PYTHONPATH to this checkout: the worker must import kplate and the handler modules
        # from the extracted .mar, as it does in a KServe pod.
        env = {
            **{k: v for k, v in self.env.items() if k != "PYTHONPATH"},
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
            "JAVA_HOME": self.env.get("JAVA_HOME") or str(Path(java).resolve().parent.parent),
        }
        bin_dir = Path(sys.executable).parent
        torchserve = bin_dir / "torchserve"
        self._spawn(
            "torchserve",
            [
                str(torchserve if torchserve.exists() else "torchserve"),
                "--start",
                "--foreground",
                "--ncs",
                "--model-store",
                str(self.model_store),
                "--ts-config",
                str(self.config),
            ],
            env,
        )
        if "front" in self.processes:
            self._spawn(
                "front",
                [
                    sys.executable,
                    "-m",
                    "handler.kserve_front",
                    "--ts_config",
                    str(self.config),
                    "--http_port",
                    str(self.front_port),
                    "--ready_timeout",
                    str(timeout_s),
                ],
                env,
            )
        try:
            self.wait_ready(timeout_s)
        except ServingError:
            self.stop()
            raise
        (self.state_dir / SERVED_FILE).write_text(json.dumps(self.served_files()))

    def mar_paths(self) -> list[Path]:
        """The archives the config's ``model_snapshot`` loads, in the model store."""
        snapshot = json.loads(self.properties.get("model_snapshot", "{}"))
        return [
            self.model_store / info["marName"]
            for versions in snapshot.get("models", {}).values()
            for info in versions.values()
        ]

    def served_files(self) -> dict[str, list[int]]:
        """The config and archives a start serves, each with its size and mtime (ns)."""
        out = {}
        for path in (self.config, *self.mar_paths()):
            with contextlib.suppress(OSError):
                st = path.stat()
                out[str(path)] = [st.st_size, st.st_mtime_ns]
        return out

    def changed_since_start(self) -> list[str]:
        """The files of :meth:`served_files` that changed since the running pair started
        (none when no start recorded them)."""
        try:
            before = json.loads((self.state_dir / SERVED_FILE).read_text())
        except (OSError, ValueError):
            return []
        now = self.served_files()
        return sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        path = self.log_dir / f"{name}.log"
        self._log_marks.setdefault(path.name, path.stat().st_size if path.exists() else 0)
        log = path.open("ab")
        # Own process group: stop() signals the whole tree (java, Python workers) at once.
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._pid_file(name).write_text(str(proc.pid))
        logger.debug("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the front's ``/v2/health/ready`` and ``/v1/models/<name>`` until both are 200
        (without a front: TorchServe's ``/ping``, 200 once its workers are up).

        Raises:
            ServingError: a process died or the deadline passed.
        """
        deadline = time.monotonic() + timeout_s
        urls = (
            [f"{self.front_url}/v2/health/ready", f"{self.front_url}/v1/models/{self.model_name}"]
            if "front" in self.processes
            else [f"{self.inference_url}/ping"]
        )
        while time.monotonic() < deadline:
            alive = self.running()
            dead = [name for name in self.processes if name not in alive]
            if dead:
                what = " and ".join(LABELS[name] for name in dead)
                cause = self.likely_cause(dead)
                first = f"{what} exited during start-up: {cause}" if cause else (
                    f"{what} exited during start-up (no error line in its log)"
                )  # fmt: skip
                raise ServingError(f"{first}\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if all(requests.get(u, timeout=2).status_code == 200 for u in urls):
                    return
            time.sleep(0.5)
        cause = self.likely_cause([])
        first = f"not ready after {timeout_s:.0f}s" + (
            f"; first error logged: {cause}" if cause else ""
        )
        raise ServingError(f"{first}\n{self.log_tail()}")

    def likely_cause(self, names: list[str]) -> str | None:
        """The log line that most likely says why start-up failed, with its log's name.

        Looks only at what this start-up wrote: first in the logs of the processes ``names``,
        then in the others (TorchServe's ``ts_log.log``, ``model_log.log``, ...); a line about
        a taken address or an ``[Errno N]`` wins over a line that merely names an error.
        """
        first = [self.log_dir / f"{name}.log" for name in names]
        logs = first + [p for p in sorted(self.log_dir.glob("*.log")) if p not in first]
        texts = [(path, self._new_lines(path)) for path in logs]
        for pattern in CAUSE_PATTERNS:
            for path, lines in texts:
                for line in lines:
                    # Indented lines are stack frames (Python or Java): not the message.
                    if line[:1].isspace() or not pattern.search(line):
                        continue
                    text = line.strip()
                    text = text if len(text) <= 300 else text[:297] + "..."
                    return f"{text} ({path.name})"
        return None

    def _new_lines(self, path: Path) -> list[str]:
        try:
            with path.open("rb") as handle:
                mark = self._log_marks.get(path.name, 0)
                if mark <= path.stat().st_size:  # else rotated or truncated: read it all
                    handle.seek(mark)
                data = handle.read()
        except OSError:
            return []
        return data.decode("utf-8", errors="replace").splitlines()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each log, for error messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, timeout_s: float = 30.0) -> list[str]:
        """Stop both process groups (SIGTERM, then SIGKILL after ``timeout_s``).

        Waits until no process of either group is left (TorchServe's Python workers
        included); returns the names of what was running.
        """
        running = self.running()
        for pid in running.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, pid in running.items():
            while _group_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.2)
            if _group_alive(pid):
                logger.warning("%s (process group %d) ignored SIGTERM; killing it", name, pid)
                _signal_group(pid, signal.SIGKILL)
                while _group_alive(pid) and time.monotonic() < deadline + 10:
                    _reap(pid)
                    time.sleep(0.2)
            _reap(pid)
            self._pid_file(name).unlink(missing_ok=True)
        return list(running)

    def __enter__(self) -> LocalServing:
        """Start, and stop again if start-up fails."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop both processes, also when the body raised."""
        self.stop()


def describe(serving: LocalServing) -> tuple[list[str], bool]:
    """One human line per server (running with its pid and URLs, or not), and whether all run.

    A running server is also asked whether it answers (front ``/v2/health/ready``,
    TorchServe ``/ping``), a second at most.
    """
    alive = serving.running()
    lines = []
    urls = {
        "torchserve": (
            f"{serving.inference_url}/ping",
            f"inference {serving.inference_url}, management {serving.management_url}, "
            f"metrics {serving.metrics_url}/metrics",
        ),
        "front": (f"{serving.front_url}/v2/health/ready", serving.front_url),
    }
    for name in serving.processes:
        label = f"{TITLES[name]}:"
        probe, where = urls[name]
        if name not in alive:
            log = serving.log_dir / f"{name}.log"
            lines.append(f"{label:<13} not running (log: {log})")
            continue
        try:
            ready = requests.get(probe, timeout=1).status_code == 200
        except requests.RequestException:
            ready = False
        state = "ready" if ready else "not answering yet"
        lines.append(f"{label:<13} running (pid {alive[name]}), {state}: {where}")
    return lines, len(alive) == len(serving.processes)


def _is_ours(pid: int) -> bool:
    """The process exists, is not a zombie, and is TorchServe or the front."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        _reap(pid)
        return False
    return b"torchserve" in cmdline or b"kserve_front" in cmdline


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process of process group ``pgid`` exists."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status of our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``make serve`` / ``make stop``; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="run kplate's TorchServe and KServe front in the background",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action",
        choices=["start", "stop", "status"],
        help="start both in the background (restarting a half running instance), stop "
        "both, or print one line per server",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="TorchServe config.properties"
    )
    parser.add_argument("--model-store", type=Path, default=DEFAULT_MODEL_STORE)
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="pid files and logs"
    )
    parser.add_argument("--front-port", type=int, default=8080, help="the KServe front's port")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait until ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serving = LocalServing(
        args.config, args.model_store, args.state_dir, front_port=args.front_port
    )
    if args.action == "stop":
        stopped = serving.stop()
        logger.info("stopped %s", ", ".join(stopped) if stopped else "nothing (not running)")
        return 0
    if args.action == "status":
        lines, everything = describe(serving)
        for line in lines:
            logger.info("%s", line)
        if not everything:
            alive = serving.running()
            logger.info(
                "%s", "half running: `make serve` stops the survivor and starts both again"
                if alive else "start both with `make serve`"
            )  # fmt: skip
        return 0 if everything else 1
    alive = serving.running()
    changed = serving.changed_since_start() if len(alive) == len(serving.processes) else []
    if changed:
        # `make serve` rebuilds a stale .mar before this runs: serve what it built.
        logger.info(
            "running, but %s changed since it started: restarting both",
            ", ".join(Path(c).name for c in changed),
        )
        serving.stop()
    elif len(alive) == len(serving.processes):
        pids = ", ".join(f"{LABELS[n]} pid {pid}" for n, pid in alive.items())
        logger.info(
            "already running (%s; %s); `make stop` first to restart", pids, serving.front_url
        )
        return 0
    elif alive:
        # Half running: restarting only the dead server could pair it with a survivor started
        # from another .mar or config (make serve rebuilds the .mar first); a fresh pair is
        # what start-up checks end to end.
        dead = [LABELS[n] for n in serving.processes if n not in alive]
        survivors = ", ".join(f"{LABELS[n]} (pid {pid})" for n, pid in alive.items())
        logger.info(
            "%s is not running but %s is: stopping it and starting both afresh",
            " and ".join(dead), survivors,
        )  # fmt: skip
        serving.stop()
    try:
        serving.check_ports()  # before the first line, which then says why
        logger.info("starting TorchServe and the KServe front (logs in %s) ...", serving.log_dir)
        serving.start(timeout_s=args.timeout)
    except ServingError as exc:
        logger.error("%s", exc)
        return 1
    name = serving.model_name
    logger.info(
        "ready.\n"
        "  KServe v1:   curl %s/v1/models/%s  |  POST %s/v1/models/%s:predict\n"
        "  KServe v2:   curl %s/v2/health/ready  |  POST %s/v2/models/%s/infer\n"
        "  TorchServe:  POST %s/predictions/%s  (metrics %s/metrics)\n"
        "  try:         .venv/bin/python request/request.py request/samples/<image> --kserve\n"
        "  stop with:   make stop",
        serving.front_url, name, serving.front_url, name,
        serving.front_url, serving.front_url, name,
        serving.inference_url, name, serving.metrics_url,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
