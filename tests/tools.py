"""Command-line tools the tests run, installed into the virtual environment by ``make install``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def venv_tool(name: str, package: str) -> str:
    """Path of ``name`` beside this interpreter (the venv), else on ``PATH``; fail if absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make install` provides it ({package})")
    return found
