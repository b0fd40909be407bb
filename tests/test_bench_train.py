"""scripts/bench_train_threads.py (`make bench-train`) times the environment `make train` uses."""

from __future__ import annotations

import re
import time

import pytest
from tools import ROOT, load_module


def test_the_benchmark_times_the_environment_make_train_sets() -> None:
    bench = load_module("bench_train_threads", ROOT / "scripts" / "bench_train_threads.py")
    line = re.search(r"^TRAIN_ENV := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert line is not None
    train_env = dict(item.split("=", 1) for item in line.group(1).split())
    assert train_env in bench.ENVIRONMENTS.values()
    assert bench.ENVIRONMENTS[bench.BASELINE] == {}


def test_a_worker_times_only_the_steps_inside_its_window() -> None:
    bench = load_module("bench_train_threads", ROOT / "scripts" / "bench_train_threads.py")
    end = time.time() + 15
    fig = bench.worker("detector", 1, end - 6, end)
    assert fig["steps"] >= 3
    # the timed steps fit in the 6 s window
    assert 0 < fig["s_per_step"] * fig["steps"] <= 6


def test_detector_nice_levels_outside_0_to_19_are_refused() -> None:
    bench = load_module("bench_train_threads", ROOT / "scripts" / "bench_train_threads.py")
    with pytest.raises(SystemExit):
        bench.main(["--detector-nice", "0", "25"])
