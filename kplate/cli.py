"""The ``kplate`` command line: ``synth``, ``train``, ``predict``, ``eval``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kplate import __version__

log = logging.getLogger("kplate")


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return n


def _size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 640x640, got {value!r}") from exc
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {value!r}")
    return w, h


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    return p


def device_args(default_device: str | None = None) -> argparse.ArgumentParser:
    """``--device`` and ``--weights`` as a parent parser, for the CLI and the scripts that
    load a :class:`kplate.Recognizer` (``default_device`` None: CUDA when available)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--device",
        default=default_device,
        help=f"cpu, cuda or cuda:N (default: {default_device or 'cuda if available'})",
    )
    p.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped)")
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    from kplate.synth import SynthJob, contact_sheet, write_dataset

    job = SynthJob(kind=args.kind, seed=args.seed, count=args.count, size=args.size)
    labels = write_dataset(job, args.out, workers=args.workers, progress=not args.quiet)
    log.info("wrote %d %s and %s", args.count, args.kind, labels)
    if args.preview:
        sheet = contact_sheet(args.out, args.preview)
        log.info("contact sheet: %s", sheet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common, dev = _common(), device_args()
    parser = argparse.ArgumentParser(prog="kplate", description="Korean licence-plate recognition")
    parser.add_argument("--version", action="version", version=f"kplate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        parents=[common],
        help="render synthetic scenes or plate crops",
        description="Render synthetic images and a labels.jsonl in the real-dev format.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--count", type=_positive_int, default=100, help="number of images (default 100)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument(
        "--kind",
        # kplate.synth.dataset.KINDS, repeated so that building the parser does not import
        # the generator; tests/test_synth.py checks that the two agree.
        choices=("scenes", "crops", "loose-crops"),
        default="scenes",
        help="scenes; crops rectified as the detector cuts them; loose-crops cut as upright "
        "boxes around tilted plates, as people crop them",
    )
    p.add_argument(
        "--size", type=_size, default=(640, 640), help="scene size WxH (default 640x640)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    p.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="SHEET.png",
        help="also draw a contact sheet of the first images with their labels",
    )
    p.set_defaults(func=cmd_synth)

    from kplate import cli_engine

    cli_engine.add_commands(sub, common, dev)
    return parser


#: Exit status when whatever reads the output closes it first (128 + SIGPIPE, as a shell
#: reports a process that signal ended).
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kplate`` console script."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.func(args))
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:
        # `kplate predict ... --json | head`: stop quietly, and keep the interpreter's last
        # flush of stdout from failing again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
