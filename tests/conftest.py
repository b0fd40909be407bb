"""Shared fixtures: paths, the real-dev folder (optional) and a loaded recognizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tools import READER_ALONE, ROOT

from kplate import Recognizer

REAL_DEV = Path(os.environ.get("KPLATE_REAL_DEV", ROOT.parent / "shared" / "real-dev"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    """The shipped weights on CPU (loaded once per test session)."""
    return Recognizer.load(device="cpu")


@pytest.fixture(scope="session")
def reader_only(recognizer: Recognizer) -> Recognizer:
    """The shipped models without the crop reader: crops and photos read by the reader of
    photos alone."""
    config = recognizer.config.updated(reader=READER_ALONE)
    return Recognizer(recognizer.detector, recognizer.reader, config, recognizer.device)


@pytest.fixture(scope="session")
def real_dev() -> Path:
    """``../shared/real-dev`` when present; tests using it skip cleanly otherwise."""
    if not (REAL_DEV / "labels.jsonl").is_file():
        pytest.skip(f"real-dev photos not present at {REAL_DEV}")
    return REAL_DEV
