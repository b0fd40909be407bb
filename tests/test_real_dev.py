"""Accuracy floors on the real photographs (``../shared/real-dev``); skipped when absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kplate import Recognizer
from kplate.evaluate import evaluate

# The targets.
CROP_EXACT = 0.90
SCENE_RECALL = 0.95
SCENE_PRECISION = 0.90
SCENE_E2E = 0.80


@pytest.fixture(scope="module")
def report(real_dev: Path, recognizer: Recognizer) -> dict[str, Any]:
    return evaluate(real_dev, recognizer, progress=False).to_json()


def test_real_dev_scene_detection(report: dict[str, Any]) -> None:
    o = report["scenes"]["overall"]
    assert o["recall"] >= SCENE_RECALL and o["precision"] >= SCENE_PRECISION, o


def test_real_dev_scene_end_to_end(report: dict[str, Any]) -> None:
    assert report["scenes"]["overall"]["e2e_exact"] >= SCENE_E2E, report["scenes"]["overall"]


def test_real_dev_crops(report: dict[str, Any]) -> None:
    assert report["crops"]["overall"]["exact"] >= CROP_EXACT, report["crops"]["overall"]
