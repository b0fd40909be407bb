"""``make serve`` / ``make serve-status`` (``handler/local_serving.py``) without TorchServe:
stand-in processes whose command lines name ``torchserve`` or ``kserve_front`` (what the pid
files are checked against), sockets held by the test, and the real command-line entry point.
The full start-up with real TorchServe is in ``test_serving_integration.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import REPO_ROOT

from handler.local_serving import (
    SERVED_FILE,
    LocalServing,
    PortInUseError,
    Ports,
    ServingError,
    main,
    render_config,
)

CONFIG = REPO_ROOT / "gs" / "config" / "config.properties"


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[LocalServing]:
    """An instance on free loopback ports with a (dummy) .mar; whatever the test started under
    its state folder is stopped afterwards."""
    ports = Ports.free()
    config = render_config(CONFIG, tmp_path / "config.properties", ports)
    (tmp_path / "model-store").mkdir()
    (tmp_path / "model-store" / "kplate.mar").write_bytes(b"")
    serving = LocalServing(
        config, tmp_path / "model-store", tmp_path / "state", front_port=ports.front
    )
    serving.state_dir.mkdir()
    try:
        yield serving
    finally:
        serving.stop(timeout_s=10)


def _cli(serving: LocalServing, action: str) -> list[str]:
    return [
        action,
        "--config", str(serving.config),
        "--model-store", str(serving.model_store),
        "--state-dir", str(serving.state_dir),
        "--front-port", str(serving.front_port),
    ]  # fmt: skip


def _stand_in(serving: LocalServing, name: str, code: str = "import time; time.sleep(120)") -> int:
    """A process the pid file ``name`` accepts (its command line names the server), in its
    own process group as ``make serve`` starts them; returns its pid."""
    tag = "torchserve" if name == "torchserve" else "handler.kserve_front"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, tag],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (serving.state_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except (ChildProcessError, ProcessLookupError):
            return True
        time.sleep(0.1)
    return False


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kplate.serve"]


# --- serve-status ------------------------------------------------------------------------


def test_status_half_running_is_a_line_per_server_and_exit_1(
    instance: LocalServing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kplate.serve")
    pid = _stand_in(instance, "torchserve")
    assert main(_cli(instance, "status")) == 1
    lines = "\n".join(_messages(caplog)).splitlines()
    assert lines[0].startswith(f"TorchServe:   running (pid {pid})")
    assert instance.inference_url in lines[0]
    assert lines[1].startswith("KServe front: not running")
    assert "make serve" in lines[2]
    assert not any("{" in line for line in lines), lines  # no dict repr


def test_status_exits_0_only_when_both_run(
    instance: LocalServing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kplate.serve")
    assert main(_cli(instance, "status")) == 1
    assert all("not running" in m for m in _messages(caplog)[:2])
    caplog.clear()
    pids = [_stand_in(instance, "torchserve"), _stand_in(instance, "front")]
    assert main(_cli(instance, "status")) == 0
    messages = _messages(caplog)
    assert len(messages) == 2
    for message, pid in zip(messages, pids, strict=True):
        assert f"running (pid {pid})" in message
    assert messages[1].endswith(instance.front_url)


def test_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit status" in out and "status  0 when TorchServe and the front both run" in out


# --- serve on a half running instance ----------------------------------------------------


@pytest.mark.parametrize("survivor", ["torchserve", "front"])
def test_serve_on_a_half_running_instance_starts_both_afresh(
    instance: LocalServing,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    survivor: str,
) -> None:
    caplog.set_level(logging.INFO, logger="kplate.serve")
    pid = _stand_in(instance, survivor)
    started: list[dict[str, int]] = []

    def start(self: LocalServing, timeout_s: float = 300.0) -> None:
        started.append(self.running())

    monkeypatch.setattr(LocalServing, "start", start)
    assert main(_cli(instance, "start")) == 0
    assert started == [{}], "start() must be called once, on a stopped instance"
    assert _gone(pid)
    said = _messages(caplog)[0]
    assert f"(pid {pid})" in said and "not running" in said and "starting both" in said


def test_serve_when_both_run_leaves_them_alone(
    instance: LocalServing, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="kplate.serve")
    pids = {name: _stand_in(instance, name) for name in ("torchserve", "front")}
    monkeypatch.setattr(LocalServing, "start", lambda *_: pytest.fail("started again"))
    assert main(_cli(instance, "start")) == 0
    assert instance.running() == pids
    assert "already running" in _messages(caplog)[0]


def test_serve_restarts_a_pair_serving_a_mar_since_rebuilt(
    instance: LocalServing, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="kplate.serve")
    pids = {name: _stand_in(instance, name) for name in ("torchserve", "front")}
    (instance.state_dir / SERVED_FILE).write_text(json.dumps(instance.served_files()))
    started: list[bool] = []
    monkeypatch.setattr(LocalServing, "start", lambda *_, **__: started.append(True))
    assert main(_cli(instance, "start")) == 0  # unchanged: left alone
    assert not started and instance.running() == pids
    (mar,) = instance.mar_paths()
    mar.write_bytes(b"rebuilt")  # as make serve's `make mar` step would
    assert instance.changed_since_start() == [str(mar)]
    assert main(_cli(instance, "start")) == 0
    assert started == [True] and all(_gone(pid) for pid in pids.values())
    assert "kplate.mar changed since it started: restarting both" in _messages(caplog)[1]


# --- ports -------------------------------------------------------------------------------


def test_bindings_are_every_port_of_the_config() -> None:
    serving = LocalServing(CONFIG, front_port=8080)
    assert {(b.host, b.port) for b in serving.bindings()} == {
        ("0.0.0.0", 8080),
        ("127.0.0.1", 8085),
        ("127.0.0.1", 8086),
        ("0.0.0.0", 8082),
        ("127.0.0.1", 7070),
        ("127.0.0.1", 7071),
    }
    alone = LocalServing(CONFIG, front_port=8080, front=False)
    assert 8080 not in {b.port for b in alone.bindings()}


@pytest.mark.parametrize(
    ("field", "what"),
    [
        ("front", "the KServe front"),
        ("inference", "TorchServe's inference API"),
        ("management", "TorchServe's management API"),
        ("metrics", "TorchServe's metrics API"),
        ("grpc_inference", "TorchServe's grpc_inference API"),
    ],
)
def test_a_port_in_use_fails_at_once_naming_it_and_its_holder(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    what: str,
) -> None:
    caplog.set_level(logging.INFO, logger="kplate.serve")
    monkeypatch.setattr(LocalServing, "_spawn", lambda *_: pytest.fail("started a server"))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = dataclasses.replace(Ports.free(), **{field: port})
        config = render_config(CONFIG, tmp_path / "config.properties", ports)
        (tmp_path / "store").mkdir()
        (tmp_path / "store" / "kplate.mar").write_bytes(b"")
        args = [
            "start", "--config", str(config), "--model-store", str(tmp_path / "store"),
            "--state-dir", str(tmp_path / "state"), "--front-port", str(ports.front),
        ]  # fmt: skip
        began = time.monotonic()
        assert main(args) == 1
        assert time.monotonic() - began < 5
    first = _messages(caplog)[0]  # the first line said, and the only one
    assert len(_messages(caplog)) == 1
    assert f"port {port} ({what}) is already in use by pid {os.getpid()} (" in first
    assert not (tmp_path / "state" / "torchserve.pid").exists()


def test_a_port_configured_twice_is_refused(tmp_path: Path) -> None:
    ports = Ports.free()
    config = render_config(CONFIG, tmp_path / "config.properties", ports)
    serving = LocalServing(config, tmp_path, tmp_path / "state", front_port=ports.inference)
    with pytest.raises(PortInUseError, match=f"port {ports.inference} is configured for both"):
        serving.check_ports()


# --- a server that exits during start-up -------------------------------------------------

FRONT_FAILS = """
print("INFO kserve: registered the ExceptionHandler of the model server")
print("Traceback (most recent call last):")
print('  File "server.py", line 1, in serve: raise OSError')
print("ERROR: [Errno 98] error while attempting to bind on address ('0.0.0.0', 8080): "
      "address already in use")
raise SystemExit(1)
"""


def test_a_server_exiting_during_start_up_names_the_cause_first(instance: LocalServing) -> None:
    instance.log_dir.mkdir()
    # A line of an earlier run, in the appended log: not this start-up's cause.
    (instance.log_dir / "front.log").write_text("ERROR: [Errno 13] permission denied (old run)\n")
    env = dict(os.environ)
    instance._spawn(
        "torchserve", [sys.executable, "-c", "import time; time.sleep(120)", "torchserve"], env
    )
    instance._spawn("front", [sys.executable, "-c", FRONT_FAILS, "handler.kserve_front"], env)
    with pytest.raises(ServingError) as info:
        instance.wait_ready(timeout_s=30)
    first, rest = str(info.value).split("\n", 1)
    assert first == (
        "the KServe front exited during start-up: ERROR: [Errno 98] error while attempting to "
        "bind on address ('0.0.0.0', 8080): address already in use (front.log)"
    )
    assert "--- front.log" in rest  # the log tails follow
