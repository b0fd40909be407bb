"""scripts/compare_eval.py: two eval reports of the same images compared plate by plate."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tools import ROOT, SAMPLES, load_module

from kplate import Recognizer
from kplate.evaluate import evaluate

compare = load_module("compare_eval", ROOT / "scripts" / "compare_eval.py")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """``kplate eval`` of the synthetic samples (scenes and crops) with the shipped weights."""
    return evaluate(SAMPLES, Recognizer.load(device="cpu"), progress=False).to_json()


def _scene_fail(file: str, truth: str, read: str | None = None) -> dict[str, Any]:
    return {"file": file, "kind": "scene", "truth": truth, "read": read}


def test_a_report_against_itself_changes_nothing(report: dict[str, Any]) -> None:
    rows = compare.paired(report, report)
    assert {r.kind for r in rows} == {"scene", "crop"}
    for r in rows:
        assert r.right_before == r.right_after and r.total > 0
        assert not r.newly_right and not r.newly_wrong and r.p_value == 1.0


def test_plates_newly_right_and_wrong_are_counted_each_way(report: dict[str, Any]) -> None:
    before, after = copy.deepcopy(report), copy.deepcopy(report)
    # before misread two plates and one crop, after misread another plate
    before["failures"] += [
        _scene_fail("a.jpg", "12가3456", "12가3458"),
        _scene_fail("b.jpg", "34나5678"),
        {"file": "c.jpg", "kind": "crop", "truth": "56다7890", "read": "56다7899"},
    ]
    after["failures"] += [
        _scene_fail("d.jpg", "78라9012"),
        {"file": "e.jpg", "kind": "scene", "false_plate": "11가1111", "box": [0, 0, 1, 1]},
    ]
    scene, crop = sorted(compare.paired(before, after), key=lambda r: r.kind != "scene")
    assert scene.right_after - scene.right_before == 1
    assert scene.newly_right == (("a.jpg", "12가3456"), ("b.jpg", "34나5678"))
    assert scene.newly_wrong == (("d.jpg", "78라9012"),)
    assert scene.p_value == pytest.approx(1.0)  # 2 against 1: no evidence either way
    assert crop.newly_right == (("c.jpg", "56다7890"),) and not crop.newly_wrong
    text = compare.describe(before, after, [scene, crop])
    assert "+ b.jpg: 34나5678" in text and "- d.jpg: 78라9012" in text
    assert (
        f"false plates: {compare.false_plates(before)} -> {compare.false_plates(before) + 1}"
        in text
    )


def test_a_one_sided_change_has_a_small_p_value(report: dict[str, Any]) -> None:
    after = copy.deepcopy(report)
    after["failures"] += [_scene_fail(f"{i}.jpg", f"{i:02d}가1234") for i in range(10)]
    (scene,) = [r for r in compare.paired(report, after) if r.kind == "scene"]
    assert len(scene.newly_wrong) == 10 and scene.p_value == pytest.approx(2 / 2**10)


def test_reports_of_different_images_are_refused(report: dict[str, Any]) -> None:
    other = copy.deepcopy(report)
    other["scenes"]["overall"]["plates"] += 1
    with pytest.raises(compare.ReportMismatchError, match="not of the same images"):
        compare.paired(report, other)


def test_cli_prints_the_comparison_and_refuses_a_non_report(
    report: dict[str, Any], tmp_path: Path
) -> None:
    after = copy.deepcopy(report)
    after["failures"].append(_scene_fail("x.jpg", "99가9999"))
    for name, r in (("a.json", report), ("b.json", after), ("bad.json", {"x": 1})):
        (tmp_path / name).write_text(json.dumps(r, ensure_ascii=False), encoding="utf-8")
    script = str(ROOT / "scripts" / "compare_eval.py")
    ok = subprocess.run([sys.executable, script, str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                         "--json", str(tmp_path / "out.json")],
                        capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "1 newly wrong" in ok.stdout and "- x.jpg: 99가9999" in ok.stdout
    rows = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert [r["kind"] for r in rows] == ["scene", "crop"]
    bad = subprocess.run([sys.executable, script, str(tmp_path / "a.json"), str(tmp_path / "bad.json")],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 2 and "not a `kplate eval --json` report" in bad.stderr
