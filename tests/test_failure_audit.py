"""scripts/failure_audit.py: a random sample of crop misreadings to judge, and its figures."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from tools import ROOT, SAMPLES, load_module

from kplate import Recognizer
from kplate.evaluate import evaluate

audit = load_module("failure_audit", ROOT / "scripts" / "failure_audit.py")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """``kplate eval`` of the committed synthetic samples, with three crops made misread
    (the shipped weights read all six exactly)."""
    rep = evaluate(SAMPLES, Recognizer.load(device="cpu"), progress=False).to_json()
    assert rep["crops"]["overall"]["crops"] == 6
    assert not [f for f in rep["failures"] if f["kind"] == "crop"]
    rep = copy.deepcopy(rep)
    rep["failures"] += [
        {"file": f"crop_{i}.jpg", "kind": "crop", "truth": t, "read": r}
        for i, t, r in [(1, "99머6177", "99버6177"), (2, "98서8940", None), (3, "x", "y")]
    ]
    return rep


def _sample_and_read(report: dict[str, Any], tmp_path: Path, count: int) -> list[dict[str, str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    assert audit.main(["sample", str(path), "--count", str(count), "--out", str(tmp_path)]) == 0
    with (tmp_path / "audit.tsv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_sample_writes_sheets_and_a_tsv_to_fill(report: dict[str, Any], tmp_path: Path) -> None:
    rows = _sample_and_read(report, tmp_path, 2)
    assert [r["index"] for r in rows] == ["0", "1"]
    assert {r["set"] for r in rows} == {"synthetic"} and all(r["judgment"] == "" for r in rows)
    assert len({r["file"] for r in rows}) == 2
    assert [p.name for p in sorted(tmp_path.glob("sheet-*.png"))] == ["sheet-00.png"]
    # the same seed draws the same failures; all three when asked for more
    again = _sample_and_read(report, tmp_path / "again", 2)
    assert [r["file"] for r in again] == [r["file"] for r in rows]
    every = {r["file"]: r for r in _sample_and_read(report, tmp_path / "all", 10)}
    assert sorted(every) == ["crop_1.jpg", "crop_2.jpg", "crop_3.jpg"]
    # the crop's own size, the label's style, and nothing read as an empty reading
    one, two = every["crop_1.jpg"], every["crop_2.jpg"]
    assert (one["width"], one["height"], one["style"]) == ("222", "113", "green-2line")
    assert (one["truth"], one["read"], two["read"]) == ("99머6177", "99버6177", "")


def test_summary_of_judged_failures(report: dict[str, Any], tmp_path: Path) -> None:
    rows = _sample_and_read(report, tmp_path, 3)
    for r, j in zip(rows, "UUR", strict=True):
        r["judgment"] = j
    s = audit.summarise(rows, [report])
    assert (s.crops, s.failures, s.judged, s.unreadable) == (6, 3, 3, 2)
    assert s.exact == pytest.approx(0.5)
    # Wilson 95% interval of 2 of 3
    assert (s.share_low, s.share_high) == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert s.ceiling(2 / 3) == pytest.approx(1 - 0.5 * 2 / 3)
    assert "2 of 3 judged unreadable" in s.describe() and "66.7%" in s.describe()
    # a second rater's column
    for r, j in zip(rows, "RRR", strict=True):
        r["second"] = j
    assert audit.summarise(rows, [report], column="second").unreadable == 0


def test_bad_judgments_and_reports_are_refused(report: dict[str, Any], tmp_path: Path) -> None:
    rows = _sample_and_read(report, tmp_path, 1)
    with pytest.raises(audit.AuditError, match="is not U or R"):
        audit.summarise(rows, [report])
    rows[0]["judgment"] = "U"
    rows[0]["file"] = "crop_6.jpg"  # read right: not a failure
    with pytest.raises(audit.AuditError, match="not a failure"):
        audit.summarise(rows, [report])
    no_crops = {**report, "crops": {}}
    with pytest.raises(audit.AuditError, match="no crops"):
        audit.crop_failures([no_crops])
    with pytest.raises(audit.AuditError, match="same name"):
        audit.crop_failures([report, report])
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    assert audit.main(["sample", str(bad), "--out", str(tmp_path / "o")]) == 2


def test_sample_keeps_a_filled_tsv_unless_forced(
    report: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sample_and_read(report, tmp_path, 2)
    tsv = tmp_path / "audit.tsv"
    judged = tsv.read_text(encoding="utf-8").replace("\t\n", "\tU\n")  # the last column
    assert judged.count("\tU\n") == 2
    tsv.write_text(judged, encoding="utf-8")
    args = ["sample", str(tmp_path / "r.json"), "--count", "2", "--out", str(tmp_path)]
    assert audit.main(args) == 2
    assert "audit.tsv exists" in capsys.readouterr().err
    assert tsv.read_text(encoding="utf-8") == judged
    assert audit.main([*args, "--force"]) == 0
    assert tsv.read_text(encoding="utf-8") != judged
