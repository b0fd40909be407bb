"""Command-line tools the tests run, installed into the virtual environment by ``make install``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[1]
#: Synthetic sample images and their labels, made by the generator for the tests.
SAMPLES = ROOT / "tests" / "data" / "synthetic"


def make_tool() -> str:
    """Path of ``make``; skip the test where it is not installed."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    return make


def venv_tool(name: str, package: str) -> str:
    """Path of ``name`` beside this interpreter (the venv), else on ``PATH``; fail if absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make install` provides it ({package})")
    return found
