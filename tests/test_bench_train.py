"""scripts/bench_train_threads.py (`make bench-train`) times the environment `make train` uses."""

from __future__ import annotations

import re

from tools import ROOT, load_module


def test_the_benchmark_times_the_environment_make_train_sets() -> None:
    bench = load_module("bench_train_threads", ROOT / "scripts" / "bench_train_threads.py")
    line = re.search(r"^TRAIN_ENV := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert line is not None
    train_env = dict(item.split("=", 1) for item in line.group(1).split())
    assert train_env in bench.ENVIRONMENTS.values()
    assert bench.ENVIRONMENTS[bench.BASELINE] == {}
