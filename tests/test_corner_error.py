"""scripts/corner_error.py: edge offsets in the plate's frame, and the report on real detections."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tools import ROOT, SAMPLES, load_module

corner_error = load_module("corner_error", ROOT / "scripts" / "corner_error.py")

# a plate seen in perspective: 300 x 70 px, sheared and tilted
PLATE = np.array([[100, 50], [400, 80], [395, 150], [98, 122]], np.float32)


def _in_plate(u: np.ndarray) -> np.ndarray:
    """Points given in the plate's unit frame, in image pixels."""
    m = cv2.getPerspectiveTransform(corner_error._UNIT, PLATE)
    return cv2.perspectiveTransform(u.astype(np.float32)[None], m)[0]


def test_offsets_are_zero_for_the_plate_itself() -> None:
    x, y = corner_error.edge_offsets(PLATE, PLATE)
    assert np.allclose(x, 0, atol=1e-5) and np.allclose(y, 0, atol=1e-5)


def test_a_margin_is_outward_and_a_cut_is_inward() -> None:
    # 10% of the width added on each side, the top cut 20% of the height into the plate
    u = np.array([[-0.1, 0.2], [1.1, 0.2], [1.1, 1.0], [-0.1, 1.0]])
    x, y = corner_error.edge_offsets(PLATE, _in_plate(u))
    assert np.allclose(x, 0.1, atol=1e-4)
    assert np.allclose(y, [-0.2, -0.2, 0.0, 0.0], atol=1e-4)


def test_a_shift_moves_one_edge_out_and_the_other_in() -> None:
    u = corner_error._UNIT + np.array([0.05, 0.0])
    x, y = corner_error.edge_offsets(PLATE, _in_plate(u))
    assert np.allclose(x, [-0.05, -0.05, 0.05, 0.05], atol=1e-4)
    assert np.allclose(y, 0, atol=1e-4)


def test_summary_counts_inward_edges() -> None:
    s = corner_error.summarise([np.array([0.1, -0.1, 0.1, 0.1])], [np.array([0.0, 0.2, -0.2, 0.4])])
    assert s["plates"] == 1
    assert s["x_mean"] == pytest.approx(0.05) and s["x_inward"] == pytest.approx(0.25)
    assert s["y_mean"] == pytest.approx(0.1) and s["y_inward"] == pytest.approx(0.25)


def test_report_on_the_committed_scenes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "corners.json"
    rc = corner_error.main([str(SAMPLES), "--jitter-draws", "300", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert rows["training jitter"]["plates"] == 300
    det = rows["detector"]
    assert det["plates"] >= 4  # the committed scenes' plates are all found and large
    # the shipped detector's corners are within a fifth of the plate of the truth on average
    assert abs(det["x_mean"]) < 0.2 and abs(det["y_mean"]) < 0.2
    assert "| detector |" in capsys.readouterr().out


def test_a_folder_without_labels_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        corner_error.main([str(tmp_path)])
