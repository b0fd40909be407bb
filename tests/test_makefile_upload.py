"""`make upload` uploads the archive the sources make now, never a stale one: it depends on
the .mar, which is rebuilt first when it is missing or older than its sources.

Dry runs (`make -n`) against an archive path in a temporary folder: nothing is built or
uploaded.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

from tools import ROOT, make_tool

ARCHIVE_STEP = "-m handler.archive --export-path"
UPLOAD_STEP = "gs/upload.py --bucket b --prefix p"


def _dry_run_upload(tmp_path: Path, mar: Path, *args: str) -> str:
    stamp = tmp_path / "installed"
    stamp.touch()
    result = subprocess.run(
        [make_tool(), "--no-print-directory", "-n", "upload", "BUCKET=b", "PREFIX=p",
         f"MAR={mar}", f"STAMP={stamp}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_upload_builds_a_missing_archive_first(tmp_path: Path) -> None:
    out = _dry_run_upload(tmp_path, tmp_path / "store" / "kplate.mar")
    assert f"{ARCHIVE_STEP} {tmp_path / 'store'}/" in out, out
    assert out.index(ARCHIVE_STEP) < out.index(UPLOAD_STEP)


def test_upload_rebuilds_an_archive_older_than_its_sources(tmp_path: Path) -> None:
    mar = tmp_path / "kplate.mar"
    mar.write_bytes(b"old")
    os.utime(mar, (0, 0))  # older than any source: retrained weights, edited handler
    assert ARCHIVE_STEP in _dry_run_upload(tmp_path, mar)


def test_upload_keeps_an_up_to_date_archive(tmp_path: Path) -> None:
    mar = tmp_path / "kplate.mar"
    mar.write_bytes(b"new")
    future = time.time() + 3600
    os.utime(mar, (future, future))  # newer than every source
    out = _dry_run_upload(tmp_path, mar)
    assert ARCHIVE_STEP not in out, out
    assert UPLOAD_STEP in out


def test_upload_passes_overwrite_and_records_the_destination(tmp_path: Path) -> None:
    mar = tmp_path / "kplate.mar"
    mar.write_bytes(b"new")
    future = time.time() + 3600
    os.utime(mar, (future, future))
    plain = _dry_run_upload(tmp_path, mar)
    assert "--overwrite" not in plain
    assert f"{UPLOAD_STEP} --record gs/.last-upload" in plain, plain
    assert f"{UPLOAD_STEP} --overwrite" in _dry_run_upload(tmp_path, mar, "OVERWRITE=1")


def _deploy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make deploy` for real with KUBECTL=true: every check runs, `true apply` does nothing."""
    return subprocess.run(
        [make_tool(), "--no-print-directory", "deploy", "KUBECTL=true",
         f"LAST_UPLOAD={tmp_path / 'last-upload'}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _params() -> dict[str, str]:
    text = (ROOT / "k8s" / "base" / "params.env").read_text(encoding="utf-8")
    pairs = (line.partition("=") for line in text.splitlines() if not line.startswith("#"))
    return {key: value for key, sep, value in pairs if sep}


def test_deploy_refuses_when_the_last_upload_went_elsewhere(tmp_path: Path) -> None:
    p = _params()
    (tmp_path / "last-upload").write_text(f"gs://{p['bucket']}/kplate/v2-elsewhere\n")
    result = _deploy(tmp_path)
    assert result.returncode != 0
    assert f"gs://{p['bucket']}/kplate/v2-elsewhere" in result.stderr
    assert "prefix=kplate/v2-elsewhere" in result.stderr  # how to serve the new upload
    assert "true apply" not in result.stdout  # kubectl never ran


def test_deploy_goes_ahead_when_the_last_upload_matches(tmp_path: Path) -> None:
    p = _params()
    (tmp_path / "last-upload").write_text(f"gs://{p['bucket']}/{p['prefix']}\n")
    result = _deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "true apply -k k8s/overlays/gpu" in result.stdout


def test_deploy_without_a_recorded_upload_says_what_it_serves(tmp_path: Path) -> None:
    p = _params()
    result = _deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"gs://{p['bucket']}/{p['prefix']}" in result.stdout + result.stderr


def _kubectl_without_context(tmp_path: Path) -> Path:
    """A kubectl as it is with no kubeconfig: every call fails, each is logged."""
    tool = tmp_path / "kubectl"
    tool.write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n'
        'echo "error: current-context is not set" >&2\nexit 1\n'
    )
    tool.chmod(0o755)
    return tool


def test_cluster_targets_without_a_kube_context_say_so_and_call_nothing_else(
    tmp_path: Path,
) -> None:
    kubectl = _kubectl_without_context(tmp_path)
    for target in ("deploy", "undeploy", "port-forward", "gcs-secret"):
        result = subprocess.run(
            [make_tool(), "--no-print-directory", target, f"KUBECTL={kubectl}",
             f"KEY={kubectl}", f"LAST_UPLOAD={tmp_path / 'last-upload'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode != 0, target
        assert "kubectl has no current context" in result.stderr, (target, result.stderr)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert set(calls) == {"config current-context"}  # no apply, delete, get or create


def test_port_forward_refuses_a_local_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = subprocess.run(
            [make_tool(), "--no-print-directory", "port-forward", "KUBECTL=true",
             f"LOCAL_PORT={port}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"localhost:{port} is in use" in result.stderr and "LOCAL_PORT=" in result.stderr
    assert "forwarding" not in result.stdout
