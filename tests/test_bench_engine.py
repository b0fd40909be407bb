"""scripts/bench_engine.py (`make bench-engine`): a short run reads its plate and writes its
report where asked, creating the folder (a fresh clone has no ``runs/``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools import ROOT


def test_a_short_benchmark_writes_its_report_into_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "bench-engine.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_engine.py"),
            "--device",
            "cpu",
            "--repeats",
            "2",
            "--batches",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["read"] == [report["truth"]]
    assert report["latency_ms"]["recognize_jpeg_bytes"]["p50"] > 0
    assert set(report["throughput_images_per_s"]) == {"1"}
