"""`make install` checks the disk a new .venv needs before it starts, not half way through pip.

Python and pip are replaced by `true` here, so nothing is installed: the tests run the
Makefile's own check and the steps it guards.
"""

import subprocess
from pathlib import Path

from tools import ROOT, make_tool


def _make_install(tmp_path: Path, needs_mb: int) -> subprocess.CompletedProcess[str]:
    make = make_tool()
    return subprocess.run(
        [
            make,
            "--no-print-directory",
            "install",
            f"VENV={tmp_path / 'new' / '.venv'}",
            f"STAMP={tmp_path / 'installed'}",
            f"VENV_NEEDS_MB={needs_mb}",
            "PYTHON=true",
            "PIP=true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_new_venv_stops_at_once_without_the_disk_it_needs(tmp_path: Path) -> None:
    result = _make_install(tmp_path, needs_mb=10**12)
    assert result.returncode != 0
    assert "needs about 1000000000000 MB of free disk" in result.stderr
    assert "MB free here" in result.stderr
    assert not (tmp_path / "installed").exists()
    assert not (tmp_path / "new" / ".venv").exists()


def test_a_new_venv_goes_on_when_the_disk_is_there(tmp_path: Path) -> None:
    result = _make_install(tmp_path, needs_mb=1)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "installed").exists()
