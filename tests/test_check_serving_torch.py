"""scripts/check_serving_torch.py (`make check-serving-torch`): the engine and the served model
checked under the running interpreter's torch; here under the project's own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tools import ROOT, SAMPLES, load_module

from handler.local_serving import ServingError, find_java
from kplate.synth import read_labels

SCRIPT = ROOT / "scripts" / "check_serving_torch.py"


def test_a_sample_read_otherwise_than_labelled_is_a_failure(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    shutil.copytree(SAMPLES, folder)
    rows = read_labels(folder / "labels.jsonl")
    scene = next(r for r in rows if r["file"].startswith("scene"))
    scene["text"] = "12가3456"
    crop = next(r for r in rows if r["file"].startswith("crop"))
    crop["text"] = "34나5678"
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    failures = load_module("check_serving_torch", SCRIPT).check_engine(folder)
    assert len(failures) == 2, failures
    assert scene["file"] in failures[0] and crop["file"] in failures[1]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_check_passes_under_the_projects_torch() -> None:
    try:
        find_java()
    except ServingError as exc:
        pytest.skip(str(exc))
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=540, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"by a worker on torch ['{torch.__version__}']" in done.stderr
    assert f"all checks passed with torch {torch.__version__}" in done.stderr
