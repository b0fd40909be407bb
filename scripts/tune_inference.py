"""Sweep the engine's inference settings on a labelled folder (held-out synthetic data).

For each detection threshold, reading-repair floor of detected plates
(``reader.repair_min_score``, ``none`` for off; crops keep ``reader.crop_repair_min_score``)
and text-score floor (``reader.min_text_score``) it prints the ``kplate eval``
overall figures, so the shipped settings are chosen on data the models never trained on
(never on ``../shared/real-dev``). The detector runs once per image, at the lowest
threshold: greedy NMS keeps the same boxes above any higher threshold, and the second look
treats each detection on its own, so filtering its detections by score gives exactly what
that threshold would.

    .venv/bin/python scripts/tune_inference.py data/heldout-scenes \\
        --thresholds 0.4 0.5 0.6 --repair none 0.2 0.3 [--min-text 0 0.3 0.5] \\
        [--weights DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from kplate import Recognizer
from kplate.cli import device_args
from kplate.config import EngineConfig
from kplate.evaluate import evaluate
from kplate.recognizer import weights_config
from kplate.result import Detection, Plate, Reading

log = logging.getLogger("tune_inference")


class SweptEngine:
    """A recognizer whose detections, made once at the lowest threshold, are filtered by
    score for the threshold under test (an :class:`kplate.evaluate.Engine`)."""

    def __init__(self, rec: Recognizer) -> None:
        self.rec = rec
        self.threshold = rec.config.detector.score_threshold
        self._cache: dict[str, list[Detection]] = {}

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            for i, dets in zip(todo, self.rec.detect([images[i] for i in todo])):
                self._cache[keys[i]] = dets
        return [[d for d in self._cache[k] if d.score >= self.threshold] for k in keys]

    def read_detections(
        self, arrays: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Plate]]:
        return self.rec.read_detections(arrays, detections)

    def read(self, crops: Sequence[Any]) -> list[Reading]:
        return self.rec.read(crops)


def _floor(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def with_settings(
    cfg: EngineConfig, threshold: float, repair: float | None, min_text: float
) -> EngineConfig:
    """``cfg`` with the settings under test, validated as a config file's would be.

    Raises:
        pydantic.ValidationError: a setting is out of its range.
    """
    return cfg.updated(
        detector={"score_threshold": threshold},
        reader={"repair_min_score": repair, "min_text_score": min_text},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[device_args("cpu")],
    )
    ap.add_argument("folder", type=Path, help="folder with labels.jsonl (scenes and/or crops)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    ap.add_argument("--repair", type=_floor, nargs="+", default=[None, 0.2, 0.3])
    ap.add_argument(
        "--min-text",
        type=float,
        nargs="+",
        default=None,
        help="text-score floors to try (default: the config's reader.min_text_score)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.folder / "labels.jsonl").is_file():
        ap.error(f"{args.folder} has no labels.jsonl")

    # the settings are checked against the weights' config before the weights are loaded
    base = weights_config(args.weights)
    min_texts = args.min_text or [base.reader.min_text_score]
    settings = list(itertools.product(sorted(args.thresholds), args.repair, sorted(min_texts)))
    try:
        configs = [with_settings(base, *row) for row in settings]
    except ValidationError as exc:
        err = exc.errors()[0]
        ap.error(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err['input']})")
    rec = Recognizer.load(weights_dir=args.weights, device=args.device)
    # detect at the lowest threshold (the first row's) once; every other threshold filters
    # those detections
    lowest = configs[0].detector
    engine = SweptEngine(rec)
    rows = []
    header = (
        "| threshold | repair | min text score | precision | recall | end-to-end "
        "| crop exact | crop chars |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (threshold, floor, min_text), config in zip(settings, configs):
        engine.threshold = threshold
        rec.config = config.model_copy(update={"detector": lowest})
        report = evaluate(args.folder, engine, progress=False).to_json()
        scenes = report["scenes"].get("overall", {})
        crops = report["crops"].get("overall", {})
        rows.append(
            {
                "threshold": threshold,
                "repair_min_score": floor,
                "min_text_score": min_text,
                **report,
            }
        )
        cells = [
            scenes.get("precision"),
            scenes.get("recall"),
            scenes.get("e2e_exact"),
            crops.get("exact"),
            crops.get("char_acc"),
        ]
        shown = " | ".join("-" if v is None else f"{v:.1%}" for v in cells)
        repair = floor if floor is not None else "none"
        lines.append(f"| {threshold} | {repair} | {min_text} | {shown} |")
        log.info(lines[-1])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
