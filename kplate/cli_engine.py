"""``kplate train``, ``kplate predict`` and ``kplate eval`` (they import torch lazily)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kplate")


def cmd_train(args: argparse.Namespace) -> int:
    from kplate.train.tasks import run

    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_count": args.train_count,
        "val_count": args.val_count,
        "val_every": args.val_every,
        "threads": args.threads,
        "ema": tuple(args.ema) if args.ema else None,
        "optimizer": args.optimizer,
    }
    weights = run(
        args.task,
        args.out,
        overrides,
        resume=args.resume,
        config=args.config,
        progress=not args.quiet,
        workers=args.workers,
        init=args.init,
        force=args.force,
    )
    log.info("weights: %s (curves: %s)", weights, args.out / "curves.png")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser, dev: argparse.ArgumentParser) -> None:
    """Register the engine subcommands on the ``kplate`` parser."""
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train the detector, the reader or the crop reader",
        description="Train on synthetic data rendered up front; validates on held-out "
        "synthetic data, checkpoints to OUT/last.ckpt, curves to OUT/curves.png. "
        "crop-reader fine-tunes a trained reader (--init) on loose and rectified crops, "
        "for the crops given to Recognizer.read.",
    )
    p.add_argument("task", choices=("detector", "reader", "crop-reader"))
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue the run of this last.ckpt as if never stopped, with its settings "
        "and engine config (other --steps, --seed, --lr, --config ... are refused; --val-every, --threads and --workers "
        "may change, --ema may add decays)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start even where --out holds another run: its outputs (last.ckpt, model.pt, "
        "model-ema*.pt ...) are removed first",
    )
    p.add_argument("--init", type=Path, default=None, help="start from these weights (a model.pt)")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="engine config YAML (default: shipped; a resumed run: its checkpoint's)",
    )
    p.add_argument("--steps", type=int, default=None, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--seed", type=int, default=None, help="data and init seed")
    p.add_argument("--train-count", type=int, default=None, help="synthetic training samples")
    p.add_argument("--val-count", type=int, default=None, help="held-out synthetic samples")
    p.add_argument("--val-every", type=int, default=None, help="validate every N steps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes")
    p.add_argument(
        "--ema",
        type=float,
        nargs="+",
        default=None,
        metavar="DECAY",
        help="also keep exponential moving averages of the weights with these decays, "
        "written as OUT/model-ema<DECAY>.pt (the trained weights are unchanged)",
    )
    p.add_argument(
        "--optimizer",
        choices=("adamw", "exact"),  # kplate.train.optim.OPTIMIZERS (torch-free here)
        default=None,
        help="adamw: torch's AdamW (the shipped weights; default); exact: the same update with a "
        "correctly rounded square root, which with make train's PORTABLE=1 kernels computes "
        "alike on any x86-64 CPU with AVX2 (kplate/train/optim.py)",
    )
    p.set_defaults(func=cmd_train)
    add_inference_commands(sub, common, dev)


def _load_recognizer(args: argparse.Namespace) -> Any:
    from kplate.recognizer import Recognizer

    return Recognizer.load(weights_dir=args.weights, device=args.device)


#: ``kplate predict``'s exit status when some images could not be read (the others are).
EXIT_SOME_FAILED = 1
#: The files ``kplate predict`` reads in a folder given as IMAGE (any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class PredictInput:
    """One image to read, or why a path given cannot be read (``error``)."""

    path: Path
    error: str | None = None


def predict_inputs(paths: list[Path]) -> list[PredictInput]:
    """The images named by ``paths``, in order: a file as given, a folder as its files with
    an image suffix (:data:`IMAGE_SUFFIXES`, by name, not its subfolders); a path that is
    neither, or a folder without images, as an input with its ``error``."""
    inputs = []
    for path in paths:
        if path.is_dir():
            try:
                files = sorted(
                    f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                )
            except OSError as exc:
                inputs.append(PredictInput(path, f"cannot list the folder: {exc.strerror or exc}"))
                continue
            if not files:
                suffixes = ", ".join(IMAGE_SUFFIXES)
                inputs.append(PredictInput(path, f"a folder without images ({suffixes})"))
            inputs.extend(PredictInput(f) for f in files)
        elif not path.exists():
            inputs.append(PredictInput(path, "no such file"))
        elif not path.is_file():
            inputs.append(PredictInput(path, "not a file"))
        elif not os.access(path, os.R_OK):
            inputs.append(PredictInput(path, "cannot read: permission denied"))
        else:
            inputs.append(PredictInput(path))
    return inputs


def cmd_predict(args: argparse.Namespace) -> int:
    from kplate.annotate import annotate
    from kplate.errors import KplateError
    from kplate.imageio import decode_image

    inputs = predict_inputs(args.images)
    if all(i.error for i in inputs):  # nothing to read: a usage error, before any weights
        raise FileNotFoundError(
            "no image to read: " + "; ".join(f"{i.path}: {i.error}" for i in inputs)
        )
    rec = _load_recognizer(args)
    names = annotated_names([i.path for i in inputs])
    results: list[dict[str, Any]] = []
    failed = 0
    for item, name in zip(inputs, names):
        path = item.path
        try:
            if item.error:
                raise OSError(item.error)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise OSError(f"cannot read: {exc.strerror or exc}") from exc
            img = decode_image(data)
        except (KplateError, OSError) as exc:  # this image alone: the others are still read
            failed += 1
            log.error("%s: %s", path, exc)
            results.append({"image": str(path), "plates": [], "error": str(exc)})
            if not args.json:
                print(f"{path}: error: {exc}")
            continue
        plates = rec.recognize([img])[0]
        results.append({"image": str(path), "plates": [p.to_dict() for p in plates]})
        if args.save_annotated:
            args.save_annotated.mkdir(parents=True, exist_ok=True)
            out = args.save_annotated / name
            annotate(img, plates).save(out, quality=90)
            log.info("annotated: %s", out)
        if not args.json:
            texts = ", ".join(
                f"{p.text} ({p.layout}, {p.color}, {p.text_score:.2f})" for p in plates
            )
            print(f"{path}: {texts or 'no plate found'}")
    if args.json:
        json.dump(results, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    return EXIT_SOME_FAILED if failed else 0


def annotated_names(paths: list[Path]) -> list[str]:
    """``STEM.annotated.jpg`` for each of ``paths``; a stem already used in this run
    (``a/car.jpg`` and ``b/car.png``) becomes ``STEM-2``, ``STEM-3`` ... (the first free one),
    so no drawing overwrites another."""
    taken: set[str] = set()
    names = []
    for path in paths:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}"
        taken.add(name)
        names.append(f"{name}.annotated.jpg")
    return names


def check_eval_folder(folder: Path) -> None:
    """Fail fast, before any weights are loaded, on a folder ``kplate eval`` cannot read.

    Raises:
        FileNotFoundError: no such folder, not a folder, or no ``labels.jsonl`` in it.
    """
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder: `kplate eval` needs a folder")
    labels = folder / "labels.jsonl"
    if not labels.is_file():
        raise FileNotFoundError(
            f"{labels} not found: `kplate eval` needs a folder with labels.jsonl"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from kplate.evaluate import evaluate, write_report

    check_eval_folder(args.folder)
    rec = _load_recognizer(args)
    report = evaluate(args.folder, rec, progress=not args.quiet, failures_dir=args.save_failures)
    md = write_report(report, args.out)
    if args.json:
        json.dump(report.to_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(md)
    return 0


def add_inference_commands(
    sub: Any, common: argparse.ArgumentParser, dev: argparse.ArgumentParser
) -> None:
    """Register ``predict`` and ``eval``."""
    p = sub.add_parser(
        "predict",
        parents=[common, dev],
        help="read the plates in images",
        description="Detect and read every plate in each image. Every image that can be "
        "read is: one that is missing, unreadable or cannot be decoded is reported on stderr "
        "(and in --json) and the exit status is then 1. Exit status 2: bad arguments, or not "
        "one image to read (nothing is loaded).",
    )
    p.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="an image file, or a folder: its files named *"
        + ", *".join(IMAGE_SUFFIXES)
        + " (any case), in name order, not its subfolders",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON array: [{"image": PATH, "plates": [...]}, ...]; an image that '
        'is missing or cannot be read or decoded gets "plates": [] and its "error" '
        "(exit status 1)",
    )
    p.add_argument(
        "--save-annotated",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each image with its plates drawn and labelled, as STEM.annotated.jpg "
        "(STEM-2.annotated.jpg ... where stems repeat)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "eval",
        parents=[common, dev],
        help="measure accuracy on a labelled folder",
        description="Evaluate on a folder with labels.jsonl (real-dev format): "
        "scene detection precision/recall at IoU 0.5, end-to-end exact match, "
        "crop exact match and character accuracy, by layout and colour.",
    )
    p.add_argument("folder", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument(
        "--out", type=Path, default=None, help="also write report.json and report.md here"
    )
    p.add_argument(
        "--save-failures",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each scene or crop with an error here, drawn: labels in yellow, plates "
        "read right in green, wrong or false ones in red",
    )
    p.set_defaults(func=cmd_eval)
