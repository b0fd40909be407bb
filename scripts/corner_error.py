"""How far the detector's plate corners are from the labelled ones, next to the corner jitter
the reader's training crops get (``kplate.synth.scene.jitter_corners``). The corners are those
``Recognizer.detect`` returns, after the second look when the engine config has one
(``detector.refine_width``).

Each found quadrilateral is mapped into its labelled plate's own frame (the plate becomes the
unit square), and each edge's offset is measured there: left and right edges in plate widths,
top and bottom edges in plate heights, positive when the edge lies outside the plate (a
margin), negative when it cuts into it. Run it on held-out synthetic scenes, never on the real
photos, to set the jitter:

    .venv/bin/python scripts/corner_error.py data/heldout-scenes [--min-width 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from kplate import Recognizer, targets
from kplate.cli import device_args
from kplate.imageio import to_rgb_array
from kplate.synth.dataset import read_labels
from kplate.synth.scene import jitter_corners

_UNIT = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)


def edge_offsets(truth: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outward offsets of ``found``'s corners from the plate ``truth`` (both 4x2, clockwise
    from top-left), in the plate's frame: ``(x, y)``, each of 4 values. ``x`` holds the left
    edge's two corners then the right edge's, in plate widths; ``y`` the top edge's then the
    bottom edge's, in plate heights."""
    to_unit = cv2.getPerspectiveTransform(np.asarray(truth, np.float32), _UNIT)
    d = cv2.perspectiveTransform(np.asarray(found, np.float32)[None], to_unit)[0] - _UNIT
    x = np.array([-d[0, 0], -d[3, 0], d[1, 0], d[2, 0]])
    y = np.array([-d[0, 1], -d[1, 1], d[2, 1], d[3, 1]])
    return x, y


def summarise(xs: list[np.ndarray], ys: list[np.ndarray]) -> dict[str, float]:
    """Mean, standard deviation and inward share of the x and y offsets."""
    x, y = np.concatenate(xs), np.concatenate(ys)
    return {
        "plates": len(xs),
        "x_mean": float(x.mean()),
        "x_sd": float(x.std()),
        "x_inward": float((x < 0).mean()),
        "y_mean": float(y.mean()),
        "y_sd": float(y.std()),
        "y_inward": float((y < 0).mean()),
    }


def detector_offsets(
    folder: Path, rec: Recognizer, min_width: float, progress: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Edge offsets of the detections matched (box IoU >= 0.5) to labelled plates at least
    ``min_width`` px wide, over the scenes of ``folder/labels.jsonl``."""
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_labels(folder / "labels.jsonl"):
        if row.get("kind", "scene") == "scene" and row.get("corners"):
            by_file[row["file"]].append(row)
    xs, ys = [], []
    for name in tqdm(sorted(by_file), desc="detect", disable=not progress):
        with Image.open(folder / name) as im:
            image = to_rgb_array(im)
        dets = rec.detect([image])[0]
        rows = by_file[name]
        hits = targets.match(
            [np.array(d.box) for d in dets], [np.array(r["box"]) for r in rows], 0.5
        )
        for det, g in zip(dets, hits):
            if g < 0:
                continue
            truth = np.array(rows[g]["corners"], np.float32)
            if float(np.linalg.norm(truth[1] - truth[0])) < min_width:
                continue
            x, y = edge_offsets(truth, np.array(det.corners, np.float32))
            xs.append(x)
            ys.append(y)
    return xs, ys


def jitter_offsets(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Edge offsets of ``n`` draws of the training crops' corner jitter on a 520x110 plate."""
    rng = np.random.default_rng(seed)
    plate = _UNIT * np.array([520.0, 110.0], np.float32)
    xs, ys = [], []
    for _ in range(n):
        x, y = edge_offsets(plate, jitter_corners(rng, plate))
        xs.append(x)
        ys.append(y)
    return xs, ys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[device_args("cpu")],
    )
    ap.add_argument("folder", type=Path, help="folder with labels.jsonl (scenes)")
    ap.add_argument("--min-width", type=float, default=60.0, help="smallest plate, in px")
    ap.add_argument("--jitter-draws", type=int, default=4000)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.folder / "labels.jsonl").is_file():
        ap.error(f"{args.folder} has no labels.jsonl")

    rec = Recognizer.load(weights_dir=args.weights, device=args.device)
    xs, ys = detector_offsets(args.folder, rec, args.min_width)
    if not xs:
        ap.error(f"no detection matched a plate of {args.min_width:g} px or more")
    rows = {
        "detector": summarise(xs, ys),
        "training jitter": summarise(*jitter_offsets(args.jitter_draws)),
    }
    lines = [
        "| corners | plates | x mean | x sd | x inward | y mean | y sd | y inward |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for source, r in rows.items():
        lines.append(
            f"| {source} | {r['plates']} | {r['x_mean']:+.1%} | {r['x_sd']:.1%} | "
            f"{r['x_inward']:.0%} | {r['y_mean']:+.1%} | {r['y_sd']:.1%} | {r['y_inward']:.0%} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
