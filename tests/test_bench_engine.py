"""scripts/bench_engine.py (`make bench-engine`): a short run reads its plate and writes its
report where asked, creating the folder (a fresh clone has no ``runs/``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from tools import ROOT

from kplate.config import load_config


def test_a_short_benchmark_writes_its_report_into_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "bench-engine.json"
    done = _bench("--repeats", "2", "--batches", "1", "--photos", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert "photos" not in report
    assert report["read"] == [report["truth"]]
    assert report["latency_ms"]["recognize_jpeg_bytes"]["p50"] > 0
    assert set(report["throughput_images_per_s"]) == {"1"}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_engine.py"), "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_another_config_is_timed_against_the_shipped_one(tmp_path: Path) -> None:
    """``--against``: the engine options of S2 in docs/model-history.md (both readers, the reader
    judging), timed in turn with the shipped config; a config that reshapes the models is
    refused with a message."""
    config = load_config().updated(
        reader={"read_with": ["reader", "crop_reader"], "judge_with": ["reader"]}
    )
    yml = tmp_path / "both.yaml"
    yml.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "bench.json"
    done = _bench(
        "--repeats", "2", "--batches", "1", "--photos", "2", "--against", str(yml),
        "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    photos = report["photos"]
    assert photos["against"]["p50_ms"] > 0 and photos["shipped"]["p50_ms"] > 0
    assert photos["ratio_p50"] > 0
    against = report["against_config"]
    assert against["config"] == str(yml) and against["read"] == [report["truth"]]
    assert against["p50_ms"] > 0 and against["p50_shipped_ms"] > 0 and against["ratio"] > 0

    yml.write_text(yaml.safe_dump(config.updated(reader={"max_len": 12}).model_dump(mode="json")))
    done = _bench("--repeats", "1", "--batches", "1", "--photos", "0", "--against", str(yml))
    assert done.returncode == 2 and "reader.max_len is 12" in done.stderr
    yml.write_text("reader:\n  read_with: [crop-reader]\n")
    done = _bench("--repeats", "1", "--batches", "1", "--photos", "0", "--against", str(yml))
    assert done.returncode == 2 and "read_with" in done.stderr
