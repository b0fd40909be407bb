"""Accuracy on the real photographs (``../shared/real-dev``); skipped when the folder is absent.

Two kinds of assertions:

* ``MEASURED``: a little under what the shipped weights measure today; a change that makes
  the product worse on real photos fails here.
* ``TARGETS``: the issue's floors. Those the shipped weights do not reach yet are strict
  ``xfail``s: when a better model reaches one, the test XPASSes, fails, and the target moves
  to ``REACHED`` (the floor then becomes a hard requirement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kplate import Recognizer
from kplate.evaluate import evaluate

#: What the shipped engine measured (kplate eval ../shared/real-dev, 2026-12-05, the weights
#: trained with wide-top-line green plates and 4% non-plate crops read as nothing): scenes
#: precision 0.867, recall 0.812, end-to-end exact 0.625; crops exact 0.552, character
#: accuracy 0.794. The weights before measured 0.800 / 0.750 / 0.500 and 0.517 / 0.791: 13
#: of the 16 plates returned instead of 12, 2 false plates instead of 3, 10 read exactly
#: instead of 8, 16 of 29 crops instead of 15. Since crops are always read as a plate
#: (``reader.crop_repair_min_score`` 0, the same weights): crops exact 0.586, character
#: accuracy 0.840 (17 of 29). Since crops are read from three cuts and unknown regions are
#: repaired: crops exact 0.621, character accuracy 0.844 (18 of 29). Since the plate is
#: looked for inside each crop: crops exact 0.621, character accuracy 0.882 (4 crops newly
#: right, 4 newly wrong). Since crops are read by the crop reader (``crop_reader.pt``): crops
#: exact 0.621, character accuracy 0.919 (18 of 29: one newly right, one newly wrong). The
#: weights of 2026-12-06 (generator with electric plates' marks, flat-topped 3s, strong roll):
#: scenes 0.938 / 0.938 / 0.750 (15 of 16 returned, 1 false plate, 12 read exactly), crops
#: exact 0.793, character accuracy 0.943 (23 of 29). Since the crop reader gives a second
#: opinion on the plates the reader is unsure of (``reader.second_opinion_below``, 2026-12-07):
#: end to end 0.8125 (13 of 16), the rest the same. The floors sit one plate or crop below.
#: (16 scene plates and 29 crops: one plate is 6 or 3.4 points.)
MEASURED = {
    "precision": 0.88,
    "recall": 0.87,
    "e2e_exact": 0.75,
    "crop_exact": 0.75,
    "crop_char_acc": 0.92,
}
#: The issue's targets.
TARGETS = {"precision": 0.90, "recall": 0.95, "e2e_exact": 0.80, "crop_exact": 0.90}
#: Targets the shipped weights reach (precision 0.938 since 2026-12-06, end to end 0.8125
#: since 2026-12-07): hard requirements.
REACHED = {"precision", "e2e_exact"}
NOT_YET = pytest.mark.xfail(
    strict=True,
    reason="target not reached by the shipped weights (see kplate/weights/MODEL_CARD.md)",
)


@pytest.fixture(scope="module")
def report(real_dev: Path, recognizer: Recognizer) -> dict[str, Any]:
    return evaluate(real_dev, recognizer, progress=False).to_json()


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    s = report["scenes"]["overall"]
    return {
        "precision": s["precision"],
        "recall": s["recall"],
        "e2e_exact": s["e2e_exact"],
        "crop_exact": report["crops"]["overall"]["exact"],
        "crop_char_acc": report["crops"]["overall"]["char_acc"],
    }


def test_report_covers_every_labelled_image(report: dict[str, Any], real_dev: Path) -> None:
    n_scenes = sum(
        1 for line in (real_dev / "labels.jsonl").read_text().splitlines() if '"scene"' in line
    )
    assert report["scenes"]["overall"]["plates"] == n_scenes
    assert report["crops"]["overall"]["crops"] > 0


@pytest.mark.parametrize("metric", sorted(MEASURED))
def test_no_regression_on_real_photos(report: dict[str, Any], metric: str) -> None:
    assert _metrics(report)[metric] >= MEASURED[metric], report["scenes"]["overall"]


@pytest.mark.parametrize(
    "metric",
    [m if m in REACHED else pytest.param(m, marks=NOT_YET) for m in sorted(TARGETS)],
)
def test_issue_target_on_real_photos(report: dict[str, Any], metric: str) -> None:
    assert _metrics(report)[metric] >= TARGETS[metric]
