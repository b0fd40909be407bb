"""Write synthetic samples to a folder with ``labels.jsonl``, and draw a contact sheet."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from kplate.synth import fonts
from kplate.synth.scene import Sample, render_crop, render_scene

log = logging.getLogger(__name__)

#: The names :func:`write_dataset` gives its images (``scene_000012.jpg``, ``loose-crop_...``).
_SAMPLE_NAME = re.compile(r"^(scene|crop|loose-crop)_[0-9]+\.jpg$")

KINDS = ("scenes", "crops", "loose-crops")


@dataclass(frozen=True)
class SynthJob:
    """What to render: ``count`` samples of ``kind`` from ``seed``, scenes at ``size``."""

    kind: str
    seed: int
    count: int
    size: tuple[int, int] = (640, 640)
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if min(self.size) < 32:
            raise ValueError(f"size must be at least 32x32, got {self.size}")


def render(kind: str, seed: int, index: int, size: tuple[int, int] = (640, 640)) -> Sample:
    """Render sample ``index`` of ``kind`` (``scenes`` at ``size``; ``crops`` and
    ``loose-crops`` at natural size)."""
    if kind == "scenes":
        return render_scene(seed, index, size[0], size[1])
    return render_crop(seed, index, loose=kind == "loose-crops")


def _encode(job: SynthJob, index: int) -> tuple[int, bytes, list[dict[str, Any]]]:
    sample = render(job.kind, job.seed, index, job.size)
    ok, buf = cv2.imencode(
        ".jpg",
        cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, job.jpeg_quality],
    )
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for sample {index}")
    h, w = sample.image.shape[:2]
    rows = [p.to_json() for p in sample.plates]
    for r in rows:
        r["image_size"] = [w, h]
    return index, buf.tobytes(), rows


def _encode_star(args: tuple[SynthJob, int]) -> tuple[int, bytes, list[dict[str, Any]]]:
    return _encode(*args)


def default_workers() -> int:
    """One worker per core."""
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def iter_encoded(job: SynthJob, workers: int) -> Iterator[tuple[int, bytes, list[dict[str, Any]]]]:
    """Yield ``(index, jpeg_bytes, label_rows)`` in index order, rendered by ``workers`` processes."""
    tasks = ((job, i) for i in range(job.count))
    if workers <= 1:
        yield from map(_encode_star, tasks)
        return
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(_encode_star, tasks, chunksize=8)


def write_dataset(
    job: SynthJob, out: Path, workers: int | None = None, progress: bool = True
) -> Path:
    """Render ``job`` into ``out/`` as JPEGs plus ``labels.jsonl``; returns the labels path.

    One row per plate, in the format of the real-dev ``labels.jsonl`` (``file``, ``text``,
    ``box``, ``kind``, ``layout``, ``color``) plus ``corners`` and the text parts. An image
    without any plate gets one row with ``text`` and ``box`` set to ``null``.
    """
    out.mkdir(parents=True, exist_ok=True)
    kind_label = "scene" if job.kind == "scenes" else "crop"
    labels = out / "labels.jsonl"
    tmp = labels.with_suffix(".jsonl.tmp")
    width = max(6, len(str(max(job.count - 1, 0))))
    if labels.exists():
        # Images are written in place: labels of an earlier run must not outlive them if
        # this one stops half way (the new labels appear only once every image is written).
        log.info("replacing the dataset in %s", out)
        labels.unlink()
    written: set[str] = set()
    with tmp.open("w", encoding="utf-8") as fh:
        it = iter_encoded(job, workers or default_workers())
        for index, data, rows in tqdm(
            it, total=job.count, disable=not progress, unit=job.kind[:-1], desc=f"synth {job.kind}"
        ):
            name = f"{job.kind[:-1]}_{index:0{width}d}.jpg"
            (out / name).write_bytes(data)
            written.add(name)
            empty = {"text": None, "box": None, "layout": None, "color": None, "corners": None}
            for r in rows or [empty]:
                fh.write(
                    json.dumps({"file": name, "kind": kind_label, **r}, ensure_ascii=False) + "\n"
                )
    tmp.replace(labels)
    stale = [f for f in out.glob("*.jpg") if _SAMPLE_NAME.match(f.name) and f.name not in written]
    for f in stale:  # samples of an earlier, larger run into the same folder
        f.unlink()
    if stale:
        log.info("removed %d images of an earlier run from %s", len(stale), out)
    return labels


def read_labels(path: Path) -> list[dict[str, Any]]:
    """Read a ``labels.jsonl`` file (one JSON object per line)."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
    return rows


def contact_sheet(
    folder: Path, out: Path, columns: int = 4, cell: int = 320, limit: int = 24
) -> Path:
    """Draw the first ``limit`` images of ``folder`` with their plate quadrilaterals and texts."""
    rows = read_labels(folder / "labels.jsonl")
    by_file: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    files = sorted(by_file)[:limit]
    n_rows = max(1, -(-len(files) // columns))
    sheet = Image.new("RGB", (columns * cell, n_rows * (cell + 40)), (40, 40, 40))
    font = ImageFont.truetype(str(fonts.find_fonts()[0]), 15)
    for i, name in enumerate(files):
        img = Image.open(folder / name).convert("RGB")
        scale = cell / max(img.size)
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        draw = ImageDraw.Draw(img)
        texts = []
        for r in by_file[name]:
            if r.get("corners"):
                pts = [(x * scale, y * scale) for x, y in r["corners"]]
                draw.polygon(pts, outline=(255, 40, 40), width=2)
            if r.get("text"):
                texts.append(f"{r['text']} {r['layout'][0]}{r['color'][0]}")
        x, y = (i % columns) * cell, (i // columns) * (cell + 40)
        sheet.paste(img, (x, y))
        label = " | ".join(texts) if texts else "(no plate)"
        ImageDraw.Draw(sheet).text(
            (x + 4, y + cell + 4), label[:48], font=font, fill=(255, 255, 255)
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
