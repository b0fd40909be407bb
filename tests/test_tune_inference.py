"""scripts/tune_inference.py: the threshold sweep gives what each threshold itself gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tools import ROOT, SAMPLES, load_module

from kplate import Recognizer
from kplate.result import Detection

tune = load_module("tune_inference", ROOT / "scripts" / "tune_inference.py")


def _scenes() -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(SAMPLES.glob("scene_*.jpg"))]


def _boxes(dets: list[Detection]) -> list[tuple[float, ...]]:
    return [(*np.round(np.asarray(d.corners).ravel(), 3).tolist(), round(d.score, 5)) for d in dets]


def test_filtering_low_threshold_detections_equals_detecting_at_the_threshold() -> None:
    images = _scenes()
    low = Recognizer.load(device="cpu")
    object.__setattr__(low.config.detector, "score_threshold", 0.05)
    swept = tune.SweptEngine(low)
    for threshold in (0.05, 0.3, 0.5, 0.7):
        direct = Recognizer.load(device="cpu")
        object.__setattr__(direct.config.detector, "score_threshold", threshold)
        swept.threshold = threshold
        got, want = swept.detect(images), direct.detect(images)
        assert [_boxes(g) for g in got] == [_boxes(w) for w in want]
    # the low-threshold pass gave more boxes than the shipped threshold keeps
    swept.threshold = 0.05
    n_low = sum(len(d) for d in swept.detect(images))
    swept.threshold = 0.5
    assert n_low > sum(len(d) for d in swept.detect(images))


def test_sweep_cli_writes_a_row_per_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    rc = tune.main([str(SAMPLES), "--thresholds", "0.5", "0.6", "--repair", "none", "0.3",
                    "--json", str(out)])  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["threshold"], r["repair_min_score"]) for r in rows] == [
        (0.5, None), (0.5, 0.3), (0.6, None), (0.6, 0.3)
    ]  # fmt: skip
    assert all(r["scenes"]["overall"]["plates"] == 6 for r in rows)
    # without --min-text every row runs at the config's own text-score floor
    assert {r["min_text_score"] for r in rows} == {0.0}
    assert "| 0.5 | none | 0.0 |" in capsys.readouterr().out


def test_sweep_cli_text_score_floor_drops_plates(tmp_path: Path) -> None:
    rec = Recognizer.load(device="cpu")
    scores = sorted(p.text_score for ps in rec.recognize(_scenes()) for p in ps)
    assert scores[0] < scores[-1]
    floor = round((scores[0] + scores[-1]) / 2, 4)
    # sweep at the settings those scores were read with, so the floor splits the same plates
    threshold, repair = rec.config.detector.score_threshold, rec.config.reader.repair_min_score
    out = tmp_path / "sweep.json"
    rc = tune.main([str(SAMPLES), "--thresholds", str(threshold), "--repair", str(repair),
                    "--min-text", str(floor), "0", "--json", str(out)])  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["min_text_score"] for r in rows] == [0.0, floor]
    every, some = (r["scenes"]["overall"] for r in rows)
    # the floor between the weakest and the strongest reading drops some plates, not all
    assert 0 < some["recall"] < every["recall"]


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--min-text", "1.5", "reader.min_text_score"),
        ("--repair", "-0.1", "reader.repair_min_score"),
        ("--thresholds", "1", "detector.score_threshold"),
    ],
)
def test_sweep_cli_rejects_a_setting_out_of_range(
    flag: str, value: str, field: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # checked before any weights are loaded: this folder has none
    with pytest.raises(SystemExit) as exc:
        tune.main([str(SAMPLES), "--weights", str(tmp_path), flag, value])
    assert exc.value.code == 2
    assert f"{field}: Input should be" in capsys.readouterr().err
