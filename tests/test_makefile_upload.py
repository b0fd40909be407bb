"""`make upload` uploads the archive the sources make now, never a stale one: it depends on
the .mar, which is rebuilt first when it is missing or older than its sources.

Dry runs (`make -n`) against an archive path in a temporary folder: nothing is built or
uploaded.
"""

import os
import subprocess
import time
from pathlib import Path

from tools import ROOT, make_tool

ARCHIVE_STEP = "-m handler.archive --export-path"
UPLOAD_STEP = "gs/upload.py --bucket b --prefix p"


def _dry_run_upload(tmp_path: Path, mar: Path) -> str:
    stamp = tmp_path / "installed"
    stamp.touch()
    result = subprocess.run(
        [make_tool(), "--no-print-directory", "-n", "upload", "BUCKET=b", "PREFIX=p",
         f"MAR={mar}", f"STAMP={stamp}"],
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
