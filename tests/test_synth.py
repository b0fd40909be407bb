from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from kplate import plates
from kplate.cli import build_parser
from kplate.synth import SynthJob, dataset, effects, fonts, render_crop, render_scene, write_dataset
from kplate.synth.backgrounds import strip_png_profile
from kplate.synth.dataset import KINDS, read_labels
from kplate.synth.plate import (
    STYLE_BY_NAME,
    STYLES,
    PlateStyle,
    _layout_cells,
    render_plate,
    text_for,
)
from kplate.synth.scene import (
    CROP_MAX_W,
    CROP_MIN_W,
    SCENE_STRONG_ROLL,
    _body,
    _emblem,
    _lamp,
    _scene_view,
    render_non_plate,
    sample_rng,
)


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.name)
def test_every_style_gives_legal_parseable_texts(style: PlateStyle) -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        t = text_for(rng, style)
        parsed = plates.parse(t.text)
        assert parsed is not None, t.text
        assert (parsed.region, parsed.type_number, parsed.use_char, parsed.serial) == (
            t.region,
            t.type_number,
            t.use_char,
            t.serial,
        )
        # legal unless the use syllable is one of the deliberate unusual ones
        if t.use_char not in plates.UNUSUAL_USE_CHARS:
            assert plates.is_valid(t.text), t.text
    img = render_plate(rng, style, text_for(rng, style), 0.5).image
    w_mm, h_mm = style.size_mm
    assert img.shape == (round(h_mm * 0.5), round(w_mm * 0.5), 3)


def test_texts_cover_rules() -> None:
    rng = np.random.default_rng(2)
    texts = [text_for(rng, s) for s in STYLES for _ in range(200)]
    assert any(t.region for t in texts) and any(t.region is None for t in texts)
    assert {len(t.type_number) for t in texts} == {2, 3}
    uses = {plates.use_of(t.use_char) for t in texts}
    assert {"private", "commercial", "rental", "military", "unknown"} <= uses


def test_scene_is_deterministic() -> None:
    a, b = render_scene(7, 3), render_scene(7, 3)
    assert np.array_equal(a.image, b.image)
    assert a.plates == b.plates
    assert not np.array_equal(a.image, render_scene(7, 4).image)


@pytest.mark.parametrize("index", range(12))
def test_scene_geometry(index: int) -> None:
    s = render_scene(11, index, 640, 480)
    assert s.image.shape == (480, 640, 3) and s.image.dtype == np.uint8
    assert len(s.plates) <= 4
    for p in s.plates:
        c = np.array(p.corners)
        assert (c[:, 0] >= 0).all() and (c[:, 0] <= 640).all()
        assert (c[:, 1] >= 0).all() and (c[:, 1] <= 480).all()
        assert p.box == (c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max())
        # clockwise from top-left: TL above BL, TR right of TL
        assert c[0, 1] < c[3, 1] and c[0, 0] < c[1, 0]
        assert 0.02 * 640 < c[:, 0].max() - c[:, 0].min() < 0.75 * 640


def test_scenes_have_zero_to_four_plates() -> None:
    counts = {len(render_scene(5, i, 256, 256).plates) for i in range(80)}
    assert 0 in counts and max(counts) >= 3 and max(counts) <= 4


def test_crop_labels() -> None:
    s = render_crop(3, 1, (160, 64))
    assert s.image.shape == (64, 160, 3)
    (label,) = s.plates
    assert plates.parse(label.text.text) is not None
    assert label.corners == ((0.0, 0.0), (160.0, 0.0), (160.0, 64.0), (0.0, 64.0))


def test_loose_crops_are_upright_boxes_around_tilted_plates() -> None:
    a, b = render_crop(3, 1, loose=True), render_crop(3, 1, loose=True)
    assert np.array_equal(a.image, b.image) and a.plates == b.plates
    # a stream of its own: the rectified crop of the same seed and index is another plate
    assert a.plates[0].text != render_crop(3, 1).plates[0].text
    tilts, fills = [], []
    for i in range(40):
        s = render_crop(5, i, (160, 64), loose=True)
        assert s.image.shape == (64, 160, 3)
        (label,) = s.plates
        assert plates.parse(label.text.text) is not None
        c = np.array(label.corners)
        # the plate is in the box, give or take the corner jitter that cut into it
        assert (c >= [-0.2 * 160, -0.3 * 64]).all() and (c <= [1.2 * 160, 1.3 * 64]).all()
        tilts.append(abs(np.degrees(np.arctan2(c[1, 1] - c[0, 1], c[1, 0] - c[0, 0]))))
        x0, y0, x1, y1 = label.box
        fills.append((x1 - x0) * (y1 - y0) / (160 * 64))
    assert np.median(tilts) > 1 and max(tilts) > 8  # seen tilted, as photographed by hand
    assert np.median(fills) < 1  # the box shows what is around the plate


def test_natural_size_crops_keep_readable_widths() -> None:
    widths = [render_crop(9, i).image.shape[1] for i in range(40)]
    # the rectified crop keeps the plate's aspect: its width follows the rendered plate width
    # (the crop height is clipped to 16..160 px, so the width stays within these bounds)
    assert min(widths) >= CROP_MIN_W * 0.85
    assert max(widths) <= CROP_MAX_W * 1.5
    assert np.median(widths) > 90


def test_blur_scales_with_plate_size() -> None:
    img = np.zeros((80, 200, 3), np.uint8)
    img[:, ::6] = 255  # thin strokes: blur lowers the contrast between neighbours

    def sharpness(blur_scale: float) -> float:
        vals = []
        for seed in range(30):
            rng = np.random.default_rng(seed)
            out = effects.degrade(rng, img.copy(), strength=1.0, blur_scale=blur_scale)
            vals.append(float(np.abs(np.diff(out.astype(np.float32), axis=1)).mean()))
        return float(np.mean(vals))

    assert sharpness(0.3) > sharpness(1.0) * 1.1


def test_car_paint_is_mostly_common_colours() -> None:
    rng = np.random.default_rng(0)
    sat = []
    for _ in range(60):
        body = _body(rng, 40, 120).astype(np.float32)
        mean = body.reshape(-1, 3).mean(0)
        sat.append(float(mean.max() - mean.min()))
    # white, black, grey and silver paints are unsaturated; most bodies are one of them
    assert np.mean(np.array(sat) < 40) > 0.6


def _use_char_on_top_share(style_name: str, regional: bool | None) -> float:
    style = STYLE_BY_NAME[style_name]
    rng = np.random.default_rng(4)
    on_top = []
    for _ in range(400):
        t = text_for(rng, style)
        if regional is not None and (t.region is not None) != regional:
            continue
        cells = _layout_cells(rng, style, t)
        (use,) = [c for c in cells if c.char == t.use_char and not c.char.isdigit()][:1]
        on_top.append(use.y1 < style.size_mm[1] / 2)
    return float(np.mean(on_top))


def test_two_line_plates_put_the_use_char_where_real_ones_do() -> None:
    # "42 무" over the serial on plates without a region; regional plates mostly put it at the
    # bottom left ("서울 41" over "거 1086"), some on top (DOMAIN.md's "서울 36 러")
    assert 0.8 < _use_char_on_top_share("green-2line-noregion", None) < 0.98
    assert 0.05 < _use_char_on_top_share("green-2line", True) < 0.28


def test_bare_one_is_the_fonts_own_stem() -> None:
    for path in map(str, fonts.find_fonts()):
        flagged, bare = fonts.glyph(path, "1"), fonts.plain_one(path)
        assert bare.shape[0] == flagged.shape[0], path
        assert (bare == bare[:1]).all(), path  # every row the same: an upright bar
        assert 0 < bare.shape[1] <= flagged.shape[1], path
        stem = (bare[0] > 128).sum()
        assert 0.04 * bare.shape[0] < stem < 0.3 * bare.shape[0], path
    # fonts whose "1" has a flag or a foot lose it
    widths = [
        fonts.plain_one(str(p)).shape[1] / fonts.glyph(str(p), "1").shape[1]
        for p in fonts.find_fonts()
    ]
    assert min(widths) < 0.6


def test_some_plates_draw_bare_ones() -> None:
    def bare_ones(style: PlateStyle) -> float:
        rng = np.random.default_rng(9)
        ones = bare = 0
        for _ in range(150):
            t = text_for(rng, style)
            plate = render_plate(rng, style, t, 0.4)
            n = t.text.count("1")
            ones += n
            bare += n * plate.bare_one
        return bare / ones

    # older two-line plates mostly draw the bare stem, newer one-line plates mostly the flag
    assert 0.05 < bare_ones(STYLES[0]) < 0.4 < bare_ones(STYLE_BY_NAME["green-2line"]) < 0.8


def test_glyph_weight_thickens_and_thins_strokes() -> None:
    path = str(fonts.find_fonts()[0])
    ink = [int((fonts.glyph(path, "8", w) > 128).sum()) for w in (-2, 0, 2)]
    assert ink[0] < 0.85 * ink[1] and ink[2] > 1.15 * ink[1]


def test_car_badges_and_lamps_stay_inside_their_box() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        img = np.full((120, 200, 3), 128, np.uint8)
        _emblem(rng, img, 100, 60, 80)
        changed = np.nonzero((img != 128).any(axis=2))
        assert len(changed[0]) > 50  # something was drawn
        # the oval's half axes (40 and at most 30) plus half its rim (at most 80 / 10 / 2)
        assert changed[1].min() >= 100 - 45 and changed[1].max() <= 100 + 45
        assert changed[0].min() >= 60 - 35 and changed[0].max() <= 60 + 35
        img[:] = 128
        _lamp(rng, img, 10, 20, 60, 30)
        changed = np.nonzero((img != 128).any(axis=2))
        assert changed[1].min() >= 10 - 4 and changed[1].max() <= 70 + 4  # half the rim
        assert changed[0].min() >= 20 - 4 and changed[0].max() <= 50 + 4


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_write_dataset_is_byte_identical(tmp_path: Path) -> None:
    job = SynthJob(kind="scenes", seed=4, count=6, size=(320, 240))
    write_dataset(job, tmp_path / "a", workers=1, progress=False)
    write_dataset(job, tmp_path / "b", workers=2, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_a_dataset_written_again_into_its_folder_replaces_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "set"
    write_dataset(SynthJob(kind="crops", seed=0, count=3), out, workers=1, progress=False)
    (out / "notes.txt").write_text("mine")
    # a run that stops after its first image: no labels of the earlier run beside it
    real = dataset.iter_encoded

    def first_then_fail(job: SynthJob, workers: int) -> Iterator[tuple[int, bytes, list]]:
        it = real(job, workers)
        yield next(it)
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "iter_encoded", first_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(SynthJob(kind="crops", seed=1, count=2), out, workers=1, progress=False)
    assert not (out / "labels.jsonl").exists()
    monkeypatch.setattr(dataset, "iter_encoded", real)
    # a whole smaller run: its labels, its images, none of the earlier run's; other files stay
    write_dataset(SynthJob(kind="crops", seed=1, count=2), out, workers=1, progress=False)
    assert [r["file"] for r in read_labels(out / "labels.jsonl")] == [
        "crop_000000.jpg",
        "crop_000001.jpg",
    ]
    assert sorted(f.name for f in out.iterdir()) == [
        "crop_000000.jpg",
        "crop_000001.jpg",
        "labels.jsonl",
        "notes.txt",
    ]


def test_synth_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    sheet = tmp_path / "sheet.png"
    cmd = [
        sys.executable,
        "-m",
        "kplate.cli",
        "synth",
        "--out",
        str(out),
        "--count",
        "5",
        "--seed",
        "3",
        "--kind",
        "scenes",
        "--preview",
        str(sheet),
        "-q",
    ]
    subprocess.run(cmd, check=True, timeout=300)
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert {r["file"] for r in rows} == {f"scene_{i:06d}.jpg" for i in range(5)}
    for r in rows:
        assert (out / r["file"]).is_file()
        assert r["kind"] == "scene"
        if r["text"] is not None:
            assert set(r) >= {
                "text",
                "box",
                "layout",
                "color",
                "corners",
                "region",
                "type_number",
                "use_char",
                "serial",
            }
            p = plates.parse(r["text"])
            assert p is not None and p.serial == r["serial"] and p.use_char == r["use_char"]
            assert r["layout"] in plates.LAYOUTS and r["color"] in plates.COLORS
    assert sheet.stat().st_size > 10_000
    for kind in ("crops", "loose-crops"):
        crops = tmp_path / kind
        subprocess.run(
            [sys.executable, "-m", "kplate.cli", "synth", "--out", str(crops), "--count", "4",
             "--kind", kind, "-q"],
            check=True,
            timeout=300,
        )  # fmt: skip
        rows = [json.loads(line) for line in (crops / "labels.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(r["kind"] == "crop" for r in rows)
        assert (crops / rows[0]["file"]).is_file()


def test_synth_cli_rejects_bad_options(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kplate.cli", "synth", "--out", str(tmp_path), "--count", "-1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "must be >= 0" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "kplate.cli", "synth", "--out", str(tmp_path), "--kind", "cars"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_synth_cli_takes_a_count_of_zero_and_sizes_of_at_least_32_by_32(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["synth", "--out", "x", "--count", "0"]).count == 0
    assert parser.parse_args(["synth", "--out", "x", "--size", "64x32"]).size == (64, 32)
    for size in ("640x16", "16x640"):
        with pytest.raises(SystemExit):
            parser.parse_args(["synth", "--out", "x", "--size", size])
        assert "size must be at least 32x32" in capsys.readouterr().err


def test_synth_cli_offers_exactly_the_generators_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["synth", "--help"])
    assert "--kind {" + ",".join(KINDS) + "}" in capsys.readouterr().out


def test_strip_png_profile_keeps_pixels(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", icc_profile=icc)
    data = buf.getvalue()
    assert b"iCCP" in data
    stripped = strip_png_profile(data)
    assert b"iCCP" not in stripped and len(stripped) < len(data)
    a = cv2.imdecode(np.frombuffer(stripped, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert a is not None and b is not None and np.array_equal(a, b)
    assert strip_png_profile(b"\xff\xd8 not a png") == b"\xff\xd8 not a png"


def test_green_plates_without_a_region_spread_their_top_line_wide() -> None:
    # real `42 무` top lines span 41-48% of the plate (typeset as the others, about a third)
    style, rng = STYLE_BY_NAME["green-2line-noregion"], np.random.default_rng(5)
    wide = []
    for _ in range(200):
        cells = _layout_cells(rng, style, text_for(rng, style))
        top = [c for c in cells if c.y1 < style.size_mm[1] / 2]
        wide.append((max(c.x1 for c in top) - min(c.x0 for c in top)) / style.size_mm[0])
    assert min(wide) > 0.30 and max(wide) < 0.49 and np.median(wide) > 0.38


def test_non_plate_cuts_are_deterministic_labelless_and_rarely_blank() -> None:
    blank = 0
    for i in range(200):
        s = render_non_plate(7, i, (160, 64))
        assert s.plates == ()
        assert s.image.shape == (64, 160, 3) and s.image.dtype == np.uint8
        blank += float(s.image.std()) <= 3.0  # a cut of plain paint, blurred: it happens
        if i < 12:
            assert np.array_equal(s.image, render_non_plate(7, i, (160, 64)).image)
    assert blank <= 6, f"{blank} of 200 cuts are blank"  # measured 4, and 4 before 2026-12-06
    natural = render_non_plate(7, 0).image
    assert 16 <= natural.shape[0] <= 160


def test_sample_kinds_have_their_own_streams() -> None:
    draws = {k: sample_rng(3, 4, k).random() for k in ("scenes", "crops", "non-plates")}
    assert len(set(draws.values())) == 3
    assert draws["scenes"] == np.random.default_rng([3, 4, 0]).random()  # scenes as before
    assert draws["crops"] == np.random.default_rng([3, 4, 1]).random()  # crops as before
    with pytest.raises(ValueError, match="kind must be one of"):
        sample_rng(3, 4, "crop")


def test_flat_three_has_a_bar_on_top_and_the_fonts_own_bowl() -> None:
    for path in map(str, fonts.find_fonts()):
        round3, flat = fonts.glyph(path, "3"), fonts.flat_three(path)
        h, w = flat.shape
        assert (h, w) == round3.shape, path
        # the top bar spans most of the width; below the waist the glyph is the font's
        bar = (flat[: max(2, h // 20)] > 128).any(axis=0).sum()
        assert bar > 0.75 * w, path
        low = int(h * 0.7)  # below the waist (0.44) and the diagonal's end
        assert np.array_equal(flat[low:], round3[low:]), path


def test_older_plates_draw_flat_threes() -> None:
    def flat_share(style: PlateStyle) -> float:
        rng = np.random.default_rng(9)
        flat = [render_plate(rng, style, text_for(rng, style), 0.3).flat_three for _ in range(300)]
        return float(np.mean(flat))

    # with every bare "1" (older lettering), and 10% of the other plates
    assert 0.2 < flat_share(STYLES[0]) < 0.4 < flat_share(STYLE_BY_NAME["green-2line"]) < 0.8


def test_electric_plates_are_pale_blue_with_marks_beside_the_text() -> None:
    style = STYLE_BY_NAME["ev-blue"]
    rng = np.random.default_rng(3)
    marked = 0
    for _ in range(40):
        img = render_plate(rng, style, text_for(rng, style), 1.0).image.astype(int)
        h, w = img.shape[:2]
        # a strip above the text, below the border, between the bolts
        strip = img[int(h * 0.095) : int(h * 0.11), int(w * 0.35) : int(w * 0.65)]
        bg = np.median(strip.reshape(-1, 3), 0)
        assert bg[2] > bg[1] > bg[0] and bg.mean() > 140  # pale sky blue
        # the marks are blue (blue well above red), not the black ink nor the background
        mark = (img[..., 2] - img[..., 0] > 90) & (np.abs(img - bg).sum(-1) > 60)
        left, right = int(mark[:, 8:34].sum()), int(mark[:, w - 28 : w - 6].sum())
        marked += left > 30 and right > 30
    assert marked >= 30  # the seal and the bolt are each left off one plate in ten


def test_some_scene_plates_roll_strongly() -> None:
    rng = np.random.default_rng(4)
    # rot = Rz(roll) Rx(pitch) Ry(yaw) maps the plate's up axis to (-sin r cos p, cos r cos p, .)
    rolls = []
    for _ in range(3000):
        rot, _dist = _scene_view(rng)
        rolls.append(abs(np.degrees(np.arctan2(-rot[0, 1], rot[1, 1]))))
    rolls_a = np.array(rolls)
    assert rolls_a.max() <= SCENE_STRONG_ROLL + 1e-6
    # 20% uniform up to 22 degrees: 20% x 14 / 22 = 12.7% beyond the usual 8
    assert 0.09 < (rolls_a > 8.0 + 1e-6).mean() < 0.16
    assert np.median(rolls_a) < 4.0


def test_channels3_gives_the_same_sums_as_broadcasting_a_mask_over_rgb() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((37, 53), dtype=np.float32)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    m3 = effects.channels3(mask)
    assert m3.shape == (37, 53, 3) and m3.dtype == np.float32 and m3.flags.c_contiguous
    np.testing.assert_array_equal(m3, np.repeat(mask[..., None], 3, axis=2))
    broadcast = (img * (1 - mask[..., None]) + 255 * mask[..., None]).astype(np.uint8)
    np.testing.assert_array_equal((img * (1 - m3) + 255 * m3).astype(np.uint8), broadcast)


@pytest.mark.parametrize("root", ["/tmp", "/var/tmp"])
def test_background_order_does_not_depend_on_where_packages_are_installed(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A virtual environment under /tmp sorts before /usr/share, one under /var after it:
    the same seed must render the same images from either."""
    from kplate.synth import backgrounds

    if not Path(root).is_dir() or not os.access(root, os.W_OK):
        pytest.skip(f"{root} is not writable here")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        data = Path(tmp) / "skimage" / "data"
        data.mkdir(parents=True)
        for name in backgrounds.SKIMAGE_FILES[:3]:
            (data / name).write_bytes(b"")
        fake = types.ModuleType("skimage")
        fake.__file__ = str(data.parent / "__init__.py")
        monkeypatch.setitem(sys.modules, "skimage", fake)
        files = backgrounds.background_files()
    # Debian's wallpapers first, then the samples by name: the order the shipped weights saw
    assert [p.name for p in files[-3:]] == sorted(backgrounds.SKIMAGE_FILES[:3])
    assert all(backgrounds.DEBIAN_DIRS[0] in p.parents for p in files[:-3])
