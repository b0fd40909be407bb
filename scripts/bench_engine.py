"""Engine benchmark: latency and throughput of ``Recognizer.recognize`` on this machine.

Machines are noisy, so every figure is also given as a ratio to a baseline measured in the
same run: decoding the same 1920x1080 JPEG with PIL (a fixed, familiar amount of CPU work).

    .venv/bin/python scripts/bench_engine.py [--device cpu|cuda] [--repeats 30] [--json OUT]
        [--against ENGINE_YAML] [--photos 20]

The headline photo is one fixed scene; ``photos`` times 20 others, since an engine whose
work depends on the plate (``reader.second_opinion_below``) costs what its photos make it.
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kplate import Plate, Recognizer
from kplate.config import EngineConfig, load_config
from kplate.errors import ConfigError
from kplate.imageio import decode_image
from kplate.synth import render_scene


def one_plate_scenes(
    seed: int, width: int = 1920, height: int = 1080, limit: int = 200
) -> Iterator[tuple[np.ndarray, str]]:
    """The synthetic scenes of ``seed`` with exactly one plate among its first ``limit``
    samples, in order, with their plate's text (deterministic)."""
    for i in range(limit):
        s = render_scene(seed, i, width, height)
        if len(s.plates) == 1:
            yield s.image, s.plates[0].text.text


def one_plate_scene(
    width: int = 1920, height: int = 1080, seed: int = 2024
) -> tuple[np.ndarray, str]:
    """The first synthetic scene of ``seed`` with exactly one plate (deterministic)."""
    for scene in one_plate_scenes(seed, width, height):
        return scene
    raise RuntimeError("no one-plate scene in the first 200 samples")


def to_jpeg(image: np.ndarray) -> bytes:
    """An RGB array encoded as the benchmark's JPEG (quality 90)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def one_plate_photos(
    count: int, width: int = 1920, height: int = 1080, seed: int = 2025
) -> list[bytes]:
    """The first ``count`` synthetic scenes of ``seed`` with exactly one plate, as JPEG
    (:func:`to_jpeg`): other plates, sizes and backgrounds than :func:`one_plate_scene`'s."""
    scenes = one_plate_scenes(seed, width, height, limit=50 * count)
    photos = [to_jpeg(image) for image, _ in itertools.islice(scenes, count)]
    if len(photos) < count:
        raise RuntimeError(f"fewer than {count} one-plate scenes in {50 * count} samples")
    return photos


def recognize_jpeg(rec: Recognizer, jpeg: bytes) -> list[list[Plate]]:
    """``rec.recognize`` from encoded bytes, decoded as the handler decodes them."""
    return rec.recognize([decode_image(jpeg)])


def per_photo(
    recognizers: Sequence[Recognizer], photos: Sequence[bytes], repeats: int = 5
) -> list[list[float]]:
    """For each recogniser, the median seconds of ``recognize`` from JPEG bytes of each photo
    (``repeats`` calls per photo after one warm-up, the recognisers called in turn)."""
    medians: list[list[float]] = [[] for _ in recognizers]
    for jpeg in photos:
        calls = [functools.partial(recognize_jpeg, rec, jpeg) for rec in recognizers]
        for out, xs in zip(medians, timed_in_turn(calls, repeats, warmup=1)):
            out.append(statistics.median(xs))
    return medians


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` calls."""
    (xs,) = timed_in_turn([fn], repeats, warmup)
    return xs


def timed_in_turn(
    fns: Sequence[Callable[[], object]], repeats: int, warmup: int = 3
) -> list[list[float]]:
    """Wall-clock seconds of each of ``fns``, called in turn, so drift hits them alike:
    ``repeats`` rounds after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, xs in zip(fns, out):
            t = time.perf_counter()
            fn()
            xs.append(time.perf_counter() - t)
    return out


def first_look_only(rec: Recognizer) -> Recognizer:
    """The same models without the second look at each detection and with one cut to read."""
    return rec.reconfigured(
        detector={"refine_width": None}, reader={"cuts": [(0.0, 0.0, 0.0, 0.0)]}
    )


#: Config fields that shape the models: an ``--against`` config must keep the weights' values.
MODEL_FIELDS = {
    "detector": ("width", "head_channels"),
    "reader": ("height", "width", "width_mult", "max_len"),
}


def with_config(rec: Recognizer, config: EngineConfig) -> Recognizer:
    """``rec``'s models under ``config``'s inference settings.

    Raises:
        ValueError: ``config`` shapes the models otherwise than the weights were built.
    """
    for section, names in MODEL_FIELDS.items():
        for name in names:
            built = getattr(getattr(rec.config, section), name)
            asked = getattr(getattr(config, section), name)
            if asked != built:
                raise ValueError(
                    f"{section}.{name} is {asked!r}, but the weights were built with {built!r}"
                )
    return rec.reconfigured(
        detector=config.detector.model_dump(), reader=config.reader.model_dump()
    )


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: torch's choice)"
    )
    ap.add_argument("--batches", default="1,8", help="batch sizes for throughput (GPU: 1,8,32)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="YAML",
        help="also time an engine config (engine.yaml with other inference settings) "
        "against the shipped one, called in turn",
    )
    ap.add_argument(
        "--photos",
        type=int,
        default=20,
        help="also time this many other one-plate 1920x1080 photos and give the p50 over "
        "photos (0: skip)",
    )
    ap.add_argument(
        "--photo-repeats", type=int, default=5, help="timed calls per photo (default 5)"
    )
    args = ap.parse_args(argv)
    against = None
    if args.against is not None:
        try:
            against = load_config(args.against)
        except ConfigError as exc:
            ap.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    img, truth = one_plate_scene()
    jpeg = to_jpeg(img)
    rec = Recognizer.load(device=args.device)
    other = None
    if against is not None:
        try:
            other = with_config(rec, against)
        except ValueError as exc:
            ap.error(f"{args.against}: {exc}")
    got = [p.text for p in rec.recognize([img])[0]]

    def decode_only() -> None:
        Image.open(io.BytesIO(jpeg)).convert("RGB").load()

    base = timed(decode_only, args.repeats)
    from_array = timed(lambda: rec.recognize([img]), args.repeats)
    from_bytes = timed(functools.partial(recognize_jpeg, rec, jpeg), args.repeats)
    detect = timed(lambda: rec.detect([img]), args.repeats)
    plain = first_look_only(rec)
    with_look, without = timed_in_turn(
        [functools.partial(recognize_jpeg, r, jpeg) for r in (rec, plain)], args.repeats
    )
    b50 = statistics.median(base)
    results: dict[str, object] = {
        "device": str(rec.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "image": "synthetic 1920x1080 JPEG, one plate",
        "truth": truth,
        "read": got,
        "baseline_pil_decode_p50_ms": round(b50 * 1e3, 2),
        "latency_ms": {
            name: {
                "p50": round(pct(xs, 50) * 1e3, 2),
                "p95": round(pct(xs, 95) * 1e3, 2),
                "p50_over_baseline": round(pct(xs, 50) / b50, 2),
            }
            for name, xs in (
                ("recognize_array", from_array),
                ("recognize_jpeg_bytes", from_bytes),
                ("detect_only", detect),
            )
        },
        "second_look_and_cut_cost": {
            "note": "from JPEG bytes, the shipped engine and the same one without the second "
            "look and the second cut, called in turn",
            "p50_ms": round(pct(with_look, 50) * 1e3, 2),
            "p50_without_ms": round(pct(without, 50) * 1e3, 2),
            "ratio": round(pct(with_look, 50) / pct(without, 50), 2),
        },
        "throughput_images_per_s": {},
    }
    if other is not None:
        shipped, theirs = timed_in_turn(
            [functools.partial(recognize_jpeg, r, jpeg) for r in (rec, other)], args.repeats
        )
        results["against_config"] = {
            "note": "from JPEG bytes, the shipped config and this one, called in turn",
            "config": str(args.against),
            "read": [p.text for p in other.recognize([img])[0]],
            "p50_ms": round(pct(theirs, 50) * 1e3, 2),
            "p50_shipped_ms": round(pct(shipped, 50) * 1e3, 2),
            "ratio": round(pct(theirs, 50) / pct(shipped, 50), 2),
        }
    if args.photos:
        photos = one_plate_photos(args.photos)
        recs = [rec] if other is None else [rec, other]
        medians = per_photo(recs, photos, args.photo_repeats)
        many: dict[str, object] = {
            "note": f"{len(photos)} other one-plate 1920x1080 JPEGs (seed 2025): each photo's "
            f"median of {args.photo_repeats} calls from bytes"
            + (", the shipped config and --against's called in turn" if other else ""),
        }
        for name, xs in zip(("shipped", "against"), medians):
            many[name] = {
                "p50_ms": round(pct(xs, 50) * 1e3, 2),
                "p95_ms": round(pct(xs, 95) * 1e3, 2),
            }
        if other is not None:
            many["ratio_p50"] = round(pct(medians[1], 50) / pct(medians[0], 50), 2)
        results["photos"] = many
    tp: dict[str, float] = {}
    for b in (int(v) for v in args.batches.split(",")):
        batch = [img] * b
        xs = timed(functools.partial(rec.recognize, batch), max(3, args.repeats // b), warmup=1)
        tp[str(b)] = round(b / statistics.median(xs), 2)
    results["throughput_images_per_s"] = tp
    first = next(iter(tp.values()))
    results["throughput_ratio_to_batch1"] = {k: round(v / first, 2) for k, v in tp.items()}
    text = json.dumps(results, ensure_ascii=False, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
