"""scripts/bench_render.py (`make bench-render`): a rendering speed-up must keep every sample."""

from __future__ import annotations

import numpy as np
import pytest
from tools import ROOT, load_module

bench = load_module("bench_render", ROOT / "scripts" / "bench_render.py")


def test_the_digest_covers_pixels_shape_and_label() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    same = bench.sample_digest(img, "12가3456")
    assert bench.sample_digest(img.copy(), "12가3456") == same
    assert bench.sample_digest(img, "12가3457") != same
    assert bench.sample_digest(img.reshape(6, 4, 3), "12가3456") != same
    changed = img.copy()
    changed[3, 5, 2] = 1
    assert bench.sample_digest(changed, "12가3456") != same


def test_a_tree_renders_the_same_bytes_in_every_process_and_other_seeds_differ() -> None:
    a = bench.run_tree(ROOT, count=2, seed=5, warmup=1)
    b = bench.run_tree(ROOT, count=2, seed=5, warmup=0)
    other = bench.run_tree(ROOT, count=2, seed=6, warmup=0)
    assert set(a) == set(bench.KINDS)
    for kind in bench.KINDS:
        assert a[kind]["sha256"] == b[kind]["sha256"]
        assert a[kind]["sha256"] != other[kind]["sha256"]
        assert a[kind]["cpu_ms"] > 0


def test_the_ref_is_exported_from_git_and_a_bad_ref_is_a_clear_error(tmp_path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = bench.export("HEAD", tmp_path)
    assert (out / "kplate" / "synth" / "scene.py").is_file()
    with pytest.raises(SystemExit, match="no-such-ref"):
        bench.export("no-such-ref", tmp_path / "x")
