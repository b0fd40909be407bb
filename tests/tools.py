"""Shared test helpers: the repository's folders, the command-line tools the tests run
(installed into the virtual environment by ``make install``), and scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[1]
#: Synthetic sample images and their labels, made by the generator for the tests.
SAMPLES = ROOT / "tests" / "data" / "synthetic"
#: Reader settings under which the reader of photos alone reads every detected plate (the
#: shipped config asks the crop reader for a second opinion on the plates it is unsure of).
READER_ALONE = {"read_with": ["reader"], "judge_with": None, "second_opinion_below": None}


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


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` (a script, not a package module) imported as module ``name``,
    once: registered in ``sys.modules``, where dataclasses look their module up."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: ``python -c`` this, then ``kplate`` arguments: the CLI, stopped as Ctrl-C would stop it
#: once its first checkpoint is written (exit status 130).
STOPPED_AT_FIRST_CHECKPOINT = """\
import sys
import kplate.train.engine as e
plot = e.plot_curves
def stop(history, path):
    plot(history, path)
    raise KeyboardInterrupt
e.plot_curves = stop
from kplate.cli import main
sys.exit(main(sys.argv[1:]))
"""
