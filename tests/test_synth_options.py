"""The generator's options that are off by default: the plate typeface's ㅎ, plates cut by the
frame's edge, and the crop reader's own ㅎ share."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kplate.config import EngineConfig
from kplate.plates import PlateText
from kplate.synth import fonts, render_crop, render_scene, scene
from kplate.synth.plate import STYLE_BY_NAME, render_plate
from kplate.synth.scene import CUT_EDGES, CutPlacement, _cut_centre, _cut_plate
from kplate.train import tasks
from kplate.train.data import CropDataset


def _ink_box(mask: np.ndarray) -> tuple[int, int]:
    """Height and width of the ink (> 128) in ``mask``."""
    ys, xs = np.nonzero(mask > 128)
    return int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1


def _hieut_part(g: np.ndarray, char: str) -> np.ndarray:
    """The ㅎ's side of a 하, 허 or 호 glyph: left of the vowel's stem, or 호's top 60%."""
    if char == "호":
        return g[: int(g.shape[0] * 0.6)]
    return g[:, : int(np.argmax((g > 128).sum(0))) - 4]


def _top_stroke(g: np.ndarray) -> tuple[int, int]:
    """Height and width of the ink above the ㅎ's bar (its first row as wide as most of it)."""
    rows = (g > 128).sum(1)
    bar = int(np.argmax(rows > 0.7 * g.shape[1]))
    return _ink_box(g[:bar])


def _hole_box(mask: np.ndarray) -> tuple[int, int]:
    """Height and width of the largest hole in the ink (the ring's)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(
        (mask <= 128).astype(np.uint8), connectivity=4
    )
    h, w = mask.shape
    holes = [s for s in stats[1:] if s[0] > 0 and s[1] > 0 and s[0] + s[2] < w and s[1] + s[3] < h]
    _, _, hw, hh, _ = max(holes, key=lambda s: s[4])
    return int(hh), int(hw)


@pytest.mark.parametrize("char", fonts.HIEUT_SYLLABLES)
def test_plate_hieut_has_an_upright_tick_a_tall_ring_and_the_fonts_vowel(char: str) -> None:
    paths = list(map(str, fonts.find_fonts()))
    flat = 0
    for path in paths:
        font, plate = fonts.glyph(path, char), fonts.plate_hieut(path, char)
        assert plate.dtype == np.uint8 and not np.array_equal(plate, font), path
        # the top stroke stands upright (in most fonts it lies flat)
        ph, pw = _top_stroke(_hieut_part(plate, char))
        assert ph >= 1.5 * pw, (path, ph, pw)
        fh, fw = _top_stroke(_hieut_part(font, char))
        flat += fh < fw
        # the ring under the bar is tall and narrow (so is its hole; the font's is wide)
        hh, hw = _hole_box(plate)
        assert hh > (1.1 if char == "호" else 1.3) * hw, (path, hh, hw)
        # the vowel is the font's own: ㅗ's bar and stem, ㅏ's or ㅓ's stem and what is right of it
        if char == "호":
            assert plate.shape == font.shape, path
            low = int(font.shape[0] * 0.85)
            assert np.array_equal(plate[low:], font[low:]), path
        else:
            k = font.shape[1] - int(np.argmax((font > 128).sum(0))) + 1
            assert plate.shape[0] == font.shape[0], path
            assert np.array_equal(plate[:, -k:], font[:, -k:]), path
    assert flat >= len(paths) - 4  # NanumSquare's faces already stand it upright
    path = paths[0]
    with pytest.raises(ValueError, match="plate_hieut draws"):
        fonts.plate_hieut(path, "가")
    ink = [(fonts.plate_hieut(path, char, w) > 128).sum() for w in (0, 2)]
    assert ink[1] > 1.15 * ink[0]


def _text(use_char: str) -> PlateText:
    return PlateText(
        text=f"12{use_char}3456", region=None, type_number="12", use_char=use_char, serial="3456"
    )


def test_plates_letter_hieut_in_the_typeface_at_their_share_only() -> None:
    style = STYLE_BY_NAME["white-2digit"]

    def plate(use_char: str, share: float, seed: int = 3) -> tuple[np.ndarray, bool]:
        p = render_plate(
            np.random.default_rng(seed), style, _text(use_char), 0.5, hieut_share=share
        )
        return p.image, p.plate_hieut

    for char in fonts.HIEUT_SYLLABLES:
        before, flag = plate(char, 0.0)
        after, flag_on = plate(char, 1.0)
        assert not flag and flag_on
        assert not np.array_equal(before, after), char
    # plates without 하 허 호 make no draw for it: the same pixels at any share
    for share in (0.5, 1.0):
        assert np.array_equal(plate("가", 0.0)[0], plate("가", share)[0])
        assert not plate("가", share)[1]
    picked = [plate("허", 0.3, seed)[1] for seed in range(200)]
    assert 0.2 < np.mean(picked) < 0.4


def test_crops_and_scenes_take_the_share_or_the_module_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # seed 3: crop 26 carries 하, crop 25 누; scene 17 of seed 2 carries 하 and 호, scene 15 자
    assert render_crop(3, 26).plates[0].text.use_char == "하"
    assert render_crop(3, 25).plates[0].text.use_char == "누"
    for index, changes in ((26, True), (25, False)):
        a = render_crop(3, index, hieut_share=0.0).image
        b = render_crop(3, index, hieut_share=1.0).image
        assert (a.shape != b.shape or not np.array_equal(a, b)) == changes, index
    for index, changes in ((17, True), (15, False)):
        fonts_way = render_scene(2, index, 320, 240, hieut_share=0.0)
        typeface_way = render_scene(2, index, 320, 240, hieut_share=1.0)
        assert (not np.array_equal(fonts_way.image, typeface_way.image)) == changes, index
        if not changes:
            assert fonts_way.plates == typeface_way.plates
    monkeypatch.setattr(scene, "HIEUT_TYPEFACE_SHARE", 0.0)
    default = render_crop(3, 26, (160, 64)).image
    monkeypatch.setattr(scene, "HIEUT_TYPEFACE_SHARE", 1.0)
    typeface = render_crop(3, 26, (160, 64)).image
    assert not np.array_equal(default, typeface)
    assert np.array_equal(typeface, render_crop(3, 26, (160, 64), hieut_share=1.0).image)
    assert np.array_equal(default, render_crop(3, 26, (160, 64), hieut_share=0.0).image)
    with pytest.raises(ValueError, match="hieut_share must be in"):
        render_crop(3, 26, hieut_share=1.5)


def test_cut_plates_add_pixels_but_no_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scene, "CUT_PLATE_SHARE", 0.0)
    plain = [render_scene(4, i, 320, 240) for i in range(6)]
    monkeypatch.setattr(scene, "CUT_PLATE_SHARE", 1.0)
    for i, before in enumerate(plain):
        after = render_scene(4, i, 320, 240)
        assert after.plates == before.plates, i
        assert not np.array_equal(after.image, before.image), i
    assert np.array_equal(render_scene(4, 0, 320, 240, cut_share=0.0).image, plain[0].image)


@pytest.mark.parametrize("edge", CUT_EDGES)
def test_cut_centre_puts_the_asked_share_inside(edge: str) -> None:
    lo, hi = np.array([-30.0, -10.0]), np.array([50.0, 12.0])  # 80 x 22 around the centre
    cx, cy = _cut_centre(CutPlacement(edge, 0.25, 0.5), lo, hi, 320, 240)
    x0, y0, x1, y1 = cx + lo[0], cy + lo[1], cx + hi[0], cy + hi[1]
    inside = {
        "left": x1 / 80,
        "right": (320 - x0) / 80,
        "top": y1 / 22,
        "bottom": (240 - y0) / 22,
    }
    assert inside[edge] == pytest.approx(0.25)
    if edge in ("left", "right"):
        assert 0 < y0 < y1 < 240
    else:
        assert 0 < x0 < x1 < 320


def test_cut_plates_cross_one_edge_of_the_frame_behind_the_labelled_plates() -> None:
    w, h = 320, 240
    edges = []
    for i in range(24):
        canvas = np.full((h, w, 3), 128, np.uint8)
        corners = _cut_plate(4, i, canvas, np.zeros((h, w), np.uint8), 1.0, 0.0)
        assert corners is not None, i
        pts = np.array(corners)
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        out = {"left": x0 < 0, "right": x1 > w, "top": y0 < 0, "bottom": y1 > h}
        assert sum(out.values()) == 1, (i, out)
        edge = next(e for e, o in out.items() if o)
        edges.append(edge)
        span = (x1 - x0) if edge in ("left", "right") else (y1 - y0)
        inside = (
            (min(x1, w) - max(x0, 0)) if edge in ("left", "right") else (min(y1, h) - max(y0, 0))
        )
        assert 0.2 - 1e-6 <= inside / span <= 0.85 + 1e-6, (i, inside / span)
        assert (canvas != 128).any(axis=2).sum() > 50  # it was painted
        # where labelled plates are, nothing is painted
        canvas[:] = 128
        _cut_plate(4, i, canvas, np.ones((h, w), np.uint8), 1.0, 0.0)
        assert (canvas == 128).all()
    assert set(edges) == set(CUT_EDGES)
    canvas = np.full((h, w, 3), 128, np.uint8)
    assert _cut_plate(4, 0, canvas, np.zeros((h, w), np.uint8), 0.0, 0.0) is None
    assert (canvas == 128).all()


def test_the_crop_readers_hieut_share_reaches_its_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = EngineConfig()
    size = (cfg.reader.width, cfg.reader.height)
    # seed 2: crop 0 (rectified) carries 허, crop 1 (loose) 주
    assert render_crop(2, 0, size).plates[0].text.use_char == "허"
    monkeypatch.setattr(scene, "HIEUT_TYPEFACE_SHARE", 0.0)
    monkeypatch.setattr(tasks, "CROP_READER_HIEUT_SHARE", None)  # the generator's default

    def crops(task: str) -> np.ndarray:
        data = tasks.task_dataset(task, cfg, 2, 2, workers=1, progress=False)
        assert isinstance(data, CropDataset)
        return data.images

    before = crops("crop-reader")
    reader = crops("reader")
    monkeypatch.setattr(tasks, "CROP_READER_HIEUT_SHARE", 1.0)
    after = crops("crop-reader")
    assert np.array_equal(after[0], render_crop(2, 0, size, hieut_share=1.0).image)
    assert not np.array_equal(after[0], before[0])
    assert np.array_equal(after[1], before[1])
    assert np.array_equal(crops("reader"), reader)  # the reader keeps the generator's default
    with pytest.raises(ValueError, match="hieut_share"):
        CropDataset(0, 1, cfg.reader, workers=1, progress=False, hieut_share=2.0)
