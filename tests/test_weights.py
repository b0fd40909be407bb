"""The shipped weights: size budget, and a format older torch releases can load."""

from __future__ import annotations

import pickletools
import subprocess
import zipfile
from pathlib import Path

import pytest
from tools import venv_tool

from kplate.recognizer import CROP_READER_FILE, DETECTOR_FILE, READER_FILE, WEIGHTS_DIR

#: Globals that ``torch.load(weights_only=True)`` has accepted since torch 2.4.
ALLOWED_GLOBALS = {
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    "torch FloatStorage",
    "torch LongStorage",
    "torch HalfStorage",
    "torch BFloat16Storage",
}


@pytest.mark.parametrize("name", [DETECTOR_FILE, READER_FILE, CROP_READER_FILE])
def test_weights_are_plain_state_dicts(name: str) -> None:
    path = WEIGHTS_DIR / name
    with zipfile.ZipFile(path) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        data = zf.read(pkl)
    globals_used = set()
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "STACK_GLOBAL"):
            globals_used.add(str(arg))
    # protocol 2 pickles name globals with GLOBAL "module name"
    assert globals_used <= ALLOWED_GLOBALS, globals_used - ALLOWED_GLOBALS


def test_weights_size_budget() -> None:
    total = sum(p.stat().st_size for p in Path(WEIGHTS_DIR).glob("*.pt"))
    assert 0 < total <= 25 * 1024 * 1024


def test_engine_runs_on_the_serving_image_python() -> None:
    """The pytorch/torchserve-kfs:0.12.0 image runs Python 3.9: the engine must too."""
    vermin = venv_tool("vermin", "vermin")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [vermin, "-t=3.9-", "--no-tips", "--violations", "--eval-annotations", "--no-parse-comments",
         str(root / "kplate"), str(root / "handler")],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
