from __future__ import annotations

import cv2
import numpy as np
import pytest

from kplate import plates, targets
from kplate.config import ReaderConfig
from kplate.models.detector import N_OUT, STRIDE

ALPHABET = ReaderConfig().alphabet


@pytest.mark.parametrize("text", ["12가3456", "서울12가3456", "123호4567", "경기71아1448"])
def test_text_roundtrip(text: str) -> None:
    slots = targets.encode_text(text, ALPHABET, 10)
    probs = np.full((10, len(ALPHABET)), 1e-5)
    probs[np.arange(10), slots] = 1.0
    probs /= probs.sum(1, keepdims=True)
    decoded, conf = targets.decode_slots(probs, ALPHABET)
    assert decoded == text
    assert 0.99 < conf <= 1.0


def test_decode_stops_at_padding_and_scores_every_slot() -> None:
    probs = np.zeros((4, len(ALPHABET)))
    probs[0, ALPHABET.index("1")] = 0.9
    probs[0, 0] = 0.1
    probs[1, 0] = 1.0
    probs[2, ALPHABET.index("7")] = 0.6  # after padding: ignored in the text
    probs[2, 0] = 0.4
    probs[3, 0] = 1.0
    text, conf = targets.decode_slots(probs, ALPHABET)
    assert text == "1"
    assert conf == pytest.approx(0.6)  # the least certain slot, even after the padding


def _slot_probs(rows: list[dict[str, float]], n_slots: int = 10) -> np.ndarray:
    """Slot probabilities from ``{char: p}`` per slot; the rest of each row is padding."""
    probs = np.zeros((n_slots, len(ALPHABET)))
    for i in range(n_slots):
        row = rows[i] if i < len(rows) else {}
        for ch, p in row.items():
            probs[i, ALPHABET.index(ch)] = p
        probs[i, 0] += 1.0 - probs[i].sum()
    return probs


def _repair(probs: np.ndarray) -> tuple[str, float] | None:
    return targets.decode_plate_slots(probs, ALPHABET, plates.REGIONS, plates.ALL_USE_CHARS)


def test_plate_decode_keeps_a_plate_shaped_argmax() -> None:
    probs = _slot_probs([{ch: 0.9} for ch in "12가3456"])
    assert _repair(probs) == ("12가3456", pytest.approx(0.9))


def test_plate_decode_repairs_a_malformed_reading() -> None:
    # argmax reads "12가34566" (5 serial digits); the slot after the 4th serial digit is
    # padding with 0.4, and every other slot is sure: the best plate string is "12가3456"
    rows = [{ch: 0.95} for ch in "12가3456"] + [{"6": 0.6}]
    probs = _slot_probs(rows)
    assert targets.decode_slots(probs, ALPHABET)[0] == "12가34566"
    text, conf = _repair(probs)  # type: ignore[misc]
    assert text == "12가3456"
    assert conf == pytest.approx(0.4)
    # a digit where the use syllable belongs: the best syllable of that slot is taken
    rows = [{"1": 0.9}, {"2": 0.9}, {"7": 0.5, "가": 0.3, "서": 0.2}] + [{c: 0.9} for c in "3456"]
    text, conf = _repair(_slot_probs(rows))  # type: ignore[misc]
    assert text == "12가3456" and conf == pytest.approx(0.3)


def test_reading_is_repaired_only_when_malformed_and_confident_enough() -> None:
    rows = [{ch: 0.95} for ch in "12가3456"] + [{"6": 0.6}]
    probs = _slot_probs(rows)
    assert targets.decode_reading(probs, ALPHABET, None)[0] == "12가34566"
    assert targets.decode_reading(probs, ALPHABET, 0.5)[0] == "12가34566"  # repair: 0.4
    assert targets.decode_reading(probs, ALPHABET, 0.3) == ("12가3456", pytest.approx(0.4))
    # a plate-shaped argmax is kept as it is, whatever the floor
    sure = _slot_probs([{ch: 0.9} for ch in "12가3456"])
    assert targets.decode_reading(sure, ALPHABET, 0.0) == ("12가3456", pytest.approx(0.9))


@pytest.mark.parametrize(
    ("text", "spells"),
    [
        ("12가3456", True),
        ("서울12가3456", True),
        ("123리4567", True),  # an older syllable the reader knows
        ("세울12가3456", False),  # plate shaped, but no such region
        ("12햏3456", False),  # no such use syllable
        ("12가345", False),
        ("", False),
    ],
)
def test_spells_plate_is_the_language_the_repair_searches(text: str, spells: bool) -> None:
    assert targets.spells_plate(text) is spells


def test_a_reading_with_an_unknown_region_is_repaired_to_a_known_one() -> None:
    # slot by slot "세울31머2321": plate shaped, but 세울 is no region; 서울 is the best one
    rows = [{"세": 0.5, "서": 0.45}, {"울": 0.9}] + [{c: 0.9} for c in "31머2321"]
    probs = _slot_probs(rows)
    assert targets.decode_slots(probs, ALPHABET)[0] == "세울31머2321"
    assert targets.decode_reading(probs, ALPHABET, 0.2) == ("서울31머2321", pytest.approx(0.45))
    assert targets.decode_reading(probs, ALPHABET, 0.5)[0] == "세울31머2321"  # floor not met
    assert targets.decode_reading(probs, ALPHABET, None)[0] == "세울31머2321"


def test_a_reading_at_exactly_the_floor_is_repaired() -> None:
    probs = _slot_probs([{c: 0.95} for c in "12가3456"] + [{"6": 0.6}])  # a stray ninth digit
    repaired = _repair(probs)
    assert repaired is not None and repaired[0] == "12가3456"
    assert targets.decode_reading(probs, ALPHABET, repaired[1]) == repaired


def test_a_three_digit_type_number_is_repaired() -> None:
    probs = _slot_probs([{c: 0.95} for c in "123가4567"] + [{"8": 0.6}])
    assert targets.decode_reading(probs, ALPHABET, 0.3)[0] == "123가4567"


def test_a_region_and_a_three_digit_type_fill_all_ten_slots() -> None:
    rows = [{"세": 0.5, "서": 0.45}, {"울": 0.9}] + [{c: 0.9} for c in "123가4567"]
    assert targets.decode_reading(_slot_probs(rows), ALPHABET, 0.2)[0] == "서울123가4567"


def test_plate_decode_reads_regions_as_whole_names() -> None:
    # slot by slot the best is "서주" (not a region); the best region pair is "서울"
    rows = [{"서": 0.9, "제": 0.1}, {"주": 0.5, "울": 0.45}] + [{c: 0.9} for c in "12가3456"]
    text, _ = _repair(_slot_probs(rows))  # type: ignore[misc]
    assert text == "서울12가3456"


def test_plate_decode_needs_room_for_a_plate() -> None:
    assert _repair(_slot_probs([{"1": 0.9}], n_slots=6)) is None


def test_encode_text_rejects_unknown_and_long() -> None:
    with pytest.raises(ValueError, match="not in the reader alphabet"):
        targets.encode_text("12A3456", ALPHABET, 10)
    with pytest.raises(ValueError, match="longer than"):
        targets.encode_text("서울123가45678", ALPHABET, 10)


def _quad(x: float, y: float, w: float, h: float) -> np.ndarray:
    return np.array([[x, y], [x + w, y + 3], [x + w, y + h + 3], [x, y + h]], np.float32)


def test_detection_targets_decode_back() -> None:
    quads = [_quad(40, 50, 120, 30), _quad(150, 160, 60, 30)]
    t = targets.encode_detections(
        quads, ["one-line", "two-line"], ["white", "green"], (32, 32), STRIDE
    )
    assert t["heat"].max() == pytest.approx(1.0)
    assert t["index"].shape == (2,) and t["offsets"].shape == (2, 8)
    # build the output a perfect model would give and decode it
    out = np.full((N_OUT, 32, 32), -10.0, np.float32)
    out[0] = np.log(t["heat"] + 1e-6) - np.log(1 - t["heat"] + 1e-6)
    for k, flat in enumerate(t["index"]):
        cy, cx = divmod(int(flat), 32)
        out[1:9, cy, cx] = t["offsets"][k]
        out[9 + t["layout"][k], cy, cx] = 5
        out[11 + t["color"][k], cy, cx] = 5
    dets = targets.decode_detections(out, STRIDE, 0.5, 0.4, 10)
    assert len(dets) == 2
    by_x = sorted(dets, key=lambda d: d[0][0, 0])
    np.testing.assert_allclose(by_x[0][0], quads[0], atol=1e-3)
    np.testing.assert_allclose(by_x[1][0], quads[1], atol=1e-3)
    assert (by_x[0][2], by_x[0][3]) == (0, 0)  # one-line, white
    assert (by_x[1][2], by_x[1][3]) == (1, 1)  # two-line, green


def test_decode_suppresses_overlaps_and_low_scores() -> None:
    out = np.full((N_OUT, 8, 8), -10.0, np.float32)
    out[0, 3, 3] = 3.0
    out[0, 3, 5] = 2.0  # a second peak whose quad overlaps the first
    out[0, 6, 6] = -1.0  # below the threshold
    for cy, cx in ((3, 3), (3, 5)):
        out[1:9, cy, cx] = np.array([-3, -1, 3, -1, 3, 1, -3, 1]) + np.array([3 - cx, 0] * 4)
    dets = targets.decode_detections(out, STRIDE, 0.35, 0.4, 10)
    assert len(dets) == 1 and dets[0][1] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_decode_returns_at_most_max_plates() -> None:
    out = np.full((N_OUT, 8, 8), -10.0, np.float32)
    for cy, cx in ((1, 1), (6, 6)):  # two peaks far apart
        out[0, cy, cx] = 3.0
        out[1:9, cy, cx] = [-0.4, -0.2, 0.4, -0.2, 0.4, 0.2, -0.4, 0.2]
    assert len(targets.decode_detections(out, STRIDE, 0.5, 0.4, 10)) == 2
    assert len(targets.decode_detections(out, STRIDE, 0.5, 0.4, 1)) == 1


def test_a_plate_centred_past_the_map_gets_no_target() -> None:
    q = np.array([[28, 4], [38, 4], [38, 8], [28, 8]], np.float32)  # centre x 33: cell 8 of 8
    assert len(targets.encode_detections([q], ["one-line"], ["white"], (8, 8), 4)["index"]) == 0


def test_match_pairs_each_truth_once_at_or_over_the_threshold() -> None:
    a, b = np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])
    assert targets.match([a, a], [a], 0.5) == [0, -1]  # the second prediction finds it taken
    assert targets.match([a], [b], targets.quad_iou_boxes(a, b)) == [0]


def test_order_quad_clockwise_from_top_left() -> None:
    q = np.array([[10, 20], [0, 0], [0, 20], [10, 0]], float)  # shuffled
    np.testing.assert_array_equal(targets.order_quad(q), [[0, 0], [10, 0], [10, 20], [0, 20]])


def test_box_iou() -> None:
    a = np.array([0, 0, 10, 10])
    assert targets.quad_iou_boxes(a, a) == 1.0
    assert targets.quad_iou_boxes(a, np.array([5, 0, 15, 10])) == pytest.approx(50 / 150)
    assert targets.quad_iou_boxes(a, np.array([20, 20, 30, 30])) == 0.0


def test_expand_quad_moves_each_edge_by_its_margin() -> None:
    rect = np.array([[100, 50], [300, 50], [300, 100], [100, 100]], float)  # 200 x 50
    np.testing.assert_allclose(targets.expand_quad(rect, (0, 0, 0, 0)), rect)
    np.testing.assert_allclose(
        targets.expand_quad(rect, (0.1, 0.2, 0.05, -0.1)),
        [[80, 40], [310, 40], [310, 95], [80, 95]],
        atol=1e-3,
    )
    # in a tilted plate's own frame: the widened quad keeps the plate's shape and centre line
    tilted = np.array([[0, 10], [100, 0], [100, 40], [0, 50]], float)
    wide = targets.expand_quad(tilted, (0.1, 0, 0.1, 0))
    np.testing.assert_allclose(wide[:, 0], [-10, 110, 110, -10], atol=1e-3)
    np.testing.assert_allclose(wide[1] - wide[0], (tilted[1] - tilted[0]) * 1.2, atol=1e-3)


def test_zoom_window_shows_the_plate_at_the_asked_width() -> None:
    small = _quad(100, 100, 40, 12)  # enlarged: exactly 64 canvas pixels wide
    w = targets.zoom_window(small, 64, (128, 96))
    hull_w = np.ptp(w.to_canvas(small)[:, 0])
    assert hull_w == pytest.approx(64, rel=0.03)
    np.testing.assert_allclose(w.to_canvas(small).mean(0), (64, 48), atol=1.0)
    big = _quad(500, 300, 460, 100)  # shrunk: a whole number of image pixels per canvas pixel
    w = targets.zoom_window(big, 64, (128, 96))
    k = (w.x1 - w.x0) / 128
    assert k == int(k) == (w.y1 - w.y0) / 96 == 7
    assert 64 / 1.5 <= np.ptp(w.to_canvas(big)[:, 0]) <= 64 * 1.5
    np.testing.assert_allclose(w.to_image(w.to_canvas(big)), big, atol=1e-9)


def test_cut_window_resamples_and_pads_black() -> None:
    img = np.random.default_rng(0).integers(1, 255, (240, 320, 3), dtype=np.uint8)
    inside = targets.Window(40, 20, 40 + 256, 20 + 192, (128, 96))
    np.testing.assert_array_equal(
        targets.cut_window(img, inside),
        cv2.resize(img[20:212, 40:296], (128, 96), interpolation=cv2.INTER_AREA),
    )
    edge = targets.Window(-64, -32, 64, 64, (128, 96))  # upper-left part outside the image
    out = targets.cut_window(img, edge)
    assert out.shape == (96, 128, 3)
    assert (out[:32, :] == 0).all() and (out[:, :64] == 0).all()
    np.testing.assert_array_equal(out[32:, 64:], img[:64, :64])
