"""``kplate train``, ``kplate predict`` and ``kplate eval`` (they import torch lazily)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
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


def cmd_predict(args: argparse.Namespace) -> int:
    from kplate.annotate import annotate
    from kplate.errors import KplateError
    from kplate.imageio import decode_image

    missing = [p for p in args.images if not p.is_file()]
    if missing:
        raise FileNotFoundError("no such image: " + ", ".join(str(p) for p in missing))
    rec = _load_recognizer(args)
    names = annotated_names(args.images)
    results: list[dict[str, Any]] = []
    failed = 0
    for path, name in zip(args.images, names):
        try:
            img = decode_image(path.read_bytes())
        except KplateError as exc:  # this image alone: the others are still read
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


def cmd_eval(args: argparse.Namespace) -> int:
    from kplate.evaluate import evaluate, write_report

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
        description="Detect and read every plate in each image.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON array: [{"image": PATH, "plates": [...]}, ...]; an image that '
        'cannot be decoded gets "plates": [] and its "error" (exit status 1)',
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
