"""The engine's second look at each detection, its reading from several cuts, and the
BatchNorm folding it loads with: checked against the shipped weights on committed scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loose_crops import loose_crops_read_exactly
from PIL import Image
from tools import SAMPLES

from kplate import Recognizer, targets
from kplate.config import DetectorConfig, ReaderConfig
from kplate.models.detector import PlateDetector
from kplate.models.layers import fold_batchnorm
from kplate.models.reader import PlateReader
from kplate.result import Detection
from kplate.synth import read_labels

SCENE = np.asarray(Image.open(SAMPLES / "scene_1.jpg").convert("RGB"))
LABELS = [r for r in read_labels(SAMPLES / "labels.jsonl") if r["file"] == "scene_1.jpg"]


def _box_at(x: float, y: float, w: float, h: float) -> Detection:
    return Detection(((x, y), (x + w, y), (x + w, y + h), (x, y + h)), 0.9, "one-line", "white")


def test_second_look_keeps_plates_and_drops_unconfirmed_boxes(recognizer: Recognizer) -> None:
    first = recognizer.reconfigured(detector={"refine_width": None}).detect([SCENE])[0]
    refined = recognizer.refine([SCENE], [first])[0]
    truth = [np.array(r["box"]) for r in LABELS]
    assert truth, "the committed scene has plates"
    # every labelled plate is still found, its corners moved by less than a fifth of its width
    hits = targets.match([np.array(d.box) for d in refined], truth, 0.5)
    assert sorted(h for h in hits if h >= 0) == list(range(len(truth)))
    by_score = {d.score: d for d in first}
    for d in refined:  # a refined detection is a first-look one with new corners
        a = by_score[d.score]
        assert (a.layout, a.color) == (d.layout, d.color)
        assert np.abs(np.subtract(a.corners, d.corners)).max() < 0.2 * (a.box[2] - a.box[0])
    # ... and a box on a plain grey patch is not
    grey = np.full((400, 600, 3), 128, np.uint8)
    ghost = _box_at(200, 180, 120, 30)
    assert recognizer.refine([grey], [[ghost]]) == [[]]
    keep = recognizer.reconfigured(detector={"refine_drop": False})
    assert keep.refine([grey], [[ghost]]) == [[ghost]]
    assert recognizer.reconfigured(detector={"refine_width": None}).refine([grey], [[ghost]]) == [
        [ghost]
    ]


def test_a_box_overlapping_a_plate_only_a_little_is_not_confirmed_by_it(
    recognizer: Recognizer,
) -> None:
    """The second look's plate must lie within box IoU 0.5 of the first look's to confirm it."""
    (det,) = recognizer.detect([SCENE])[0]
    shift = 0.75 * (det.box[2] - det.box[0])
    shifted = Detection(
        tuple((x + shift, y) for x, y in det.corners),  # type: ignore[arg-type]
        0.9, det.layout, det.color,
    )  # fmt: skip
    assert recognizer.refine([SCENE], [[shifted]]) == [[]]
    assert recognizer.refine([SCENE], [[det]]) != [[]]  # the plate itself is confirmed


def test_second_look_blends_the_corners(recognizer: Recognizer) -> None:
    first = recognizer.reconfigured(detector={"refine_width": None}).detect([SCENE])
    corners = {
        blend: [
            d.corners
            for d in recognizer.reconfigured(detector={"refine_blend": blend}).refine(
                [SCENE], first
            )[0]
        ]
        for blend in (0.0, 0.5, 1.0)
    }
    kept = {d.corners for d in first[0]}
    assert corners[0.0] and all(c in kept for c in corners[0.0])  # blend 0: first corners
    assert corners[1.0] != corners[0.0]
    np.testing.assert_allclose(
        corners[0.5], (np.array(corners[0.0]) + np.array(corners[1.0])) / 2, atol=1e-6
    )


def test_second_look_is_part_of_detect(recognizer: Recognizer) -> None:
    off = recognizer.reconfigured(detector={"refine_width": None})
    expected = recognizer.refine([SCENE], off.detect([SCENE]))
    assert recognizer.detect([SCENE]) == expected


def test_readings_average_the_cuts(recognizer: Recognizer) -> None:
    dets = recognizer.detect([SCENE])
    one = recognizer.reconfigured(reader={"cuts": ((0.0, 0.0, 0.0, 0.0),)})
    twice = recognizer.reconfigured(reader={"cuts": ((0.0, 0.0, 0.0, 0.0),) * 2})
    a, b = one.read_detections([SCENE], dets)[0], twice.read_detections([SCENE], dets)[0]
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text_score for p in a] == pytest.approx([p.text_score for p in b], abs=1e-5)
    # the cuts are what is read: the plate's middle fifth does not read as the whole plate
    narrow = recognizer.reconfigured(reader={"cuts": ((-0.4, -0.2, -0.4, -0.2),)})
    assert [p.text for p in narrow.read_detections([SCENE], dets)[0]] != [p.text for p in a]


def test_crops_are_read_from_their_cuts(recognizer: Recognizer) -> None:
    (det,) = recognizer.detect([SCENE])[0]
    crop = recognizer.rectify(SCENE, np.asarray(det.corners))
    one = recognizer.reconfigured(reader={"crop_cuts": ((0.0, 0.0, 0.0, 0.0),)})
    twice = recognizer.reconfigured(reader={"crop_cuts": ((0.0, 0.0, 0.0, 0.0),) * 2})
    (a,), (b,) = one.read([crop]), twice.read([crop])
    assert a.text == b.text and a.score == pytest.approx(b.score, abs=1e-5)
    # a cut of the crop's middle fifth is what is read, not the whole crop
    narrow = recognizer.reconfigured(reader={"crop_cuts": ((-0.4, -0.2, -0.4, -0.2),)})
    assert narrow.read([crop])[0].text != a.text
    # the default shifted cuts change the score, not this clear plate's text
    (c,) = recognizer.read([crop])
    assert c.text == a.text and c.score != pytest.approx(a.score, abs=1e-6)


def test_loose_crops_are_read_where_the_plate_is_found(reader_only: Recognizer) -> None:
    # the look on its own, with the reader of photos (the crop reader needs it less)
    as_given = reader_only.reconfigured(detector={"crop_refine_width": None})
    looking, blind = loose_crops_read_exactly([reader_only, as_given], seed=11, count=48)
    # tilted plates in upright boxes: 39 against 32 read exactly with the weights of 2026-12-06
    assert looking >= blind + 4


def test_nothing_to_read_reads_nothing(recognizer: Recognizer) -> None:
    assert recognizer.read([]) == []
    assert recognizer.read_detections([SCENE], [[]]) == [[]]
    assert recognizer.refine([SCENE], [[]]) == [[]]


def test_fold_batchnorm_keeps_outputs() -> None:
    torch.manual_seed(0)
    for model, x in (
        (PlateDetector(DetectorConfig()), torch.rand(2, 3, 96, 128)),
        (PlateReader(ReaderConfig()), torch.rand(2, 3, 64, 160)),
    ):
        for m in model.modules():  # BatchNorm statistics as after training, not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        with torch.inference_mode():
            before = model(x)
            folded = fold_batchnorm(model)
            after = folded(x)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(PlateReader(ReaderConfig()).train())


def test_config_checks_second_look_settings() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        DetectorConfig(refine_canvas=(100, 96))
    with pytest.raises(ValueError, match="multiples of 32"):
        DetectorConfig(crop_refine_canvas=(192, 150))
    with pytest.raises(ValueError, match="multiples of 32"):
        DetectorConfig(refine_canvas=(0, 96))  # an empty canvas
    with pytest.raises(ValueError):
        DetectorConfig(crop_refine_blend=1.5)
    with pytest.raises(ValueError):
        ReaderConfig(cuts=())
    with pytest.raises(ValueError):
        ReaderConfig(crop_cuts=())
