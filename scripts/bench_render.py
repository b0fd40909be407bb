"""Rendering benchmark: the samples ``make train`` renders, by this tree's generator and by the
one at a git ref, with a check that they are the same bytes.

Training renders every sample up front (the detector's scenes, the reader's and the crop
reader's crops), so the generator's speed is part of ``make train``'s time, and a change meant
only to make it faster must leave every sample as it was, or the shipped weights are no longer
reproduced. This script renders ``--count`` samples of each kind with the working tree's
``kplate`` and with ``--against``'s (``git archive`` into a temporary folder), each in its own
process, alternating round by round (these machines are noisy), and reports the CPU time per
sample as a ratio to the ref's, and whether the two wrote the same bytes (image and label).

    .venv/bin/python scripts/bench_render.py [--against HEAD] [--count 300] [--rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Samples rendered before the timing starts, from other indices (glyph and photo caches).
WARMUP = 100
#: Kinds as the training tasks render them (kplate.train.tasks).
KINDS = ("detector-scenes", "reader-crops", "crop-reader-crops")


def sample_digest(image: Any, label: str) -> bytes:
    """sha256 of one sample: its pixels, shape and label."""
    d = hashlib.sha256(image.tobytes())
    d.update(repr(image.shape).encode())
    d.update(label.encode())
    return d.digest()


def worker(count: int, seed: int, warmup: int = WARMUP) -> dict[str, dict[str, Any]]:
    """Render ``count`` samples of each of :data:`KINDS` with the ``kplate`` on ``sys.path``,
    after ``warmup`` others; CPU milliseconds per sample and the sha256 of them all, per kind."""
    from kplate.config import load_config
    from kplate.train import data, tasks

    cfg = load_config(None)
    reader_size = (cfg.reader.width, cfg.reader.height)
    crop_extra: dict[str, Any] = {}
    if hasattr(tasks, "CROP_READER_HIEUT_SHARE"):  # generators before it have no such option
        crop_extra["hieut_share"] = tasks.CROP_READER_HIEUT_SHARE
    makers: dict[str, Callable[[int], tuple[Any, Any]]] = {
        "detector-scenes": data._SceneTask(seed, cfg.detector.train_size),
        "reader-crops": data._CropTask(seed, reader_size, tasks.READER_NON_PLATE_SHARE),
        "crop-reader-crops": data._CropTask(
            seed, reader_size, loose_share=tasks.CROP_READER_LOOSE_SHARE, **crop_extra
        ),
    }
    out = {}
    for kind, task in makers.items():
        for i in range(10**6, 10**6 + warmup):
            task(i)
        total = hashlib.sha256()
        t = time.process_time()
        for i in range(count):
            image, meta = task(i)
            total.update(sample_digest(image, repr(meta)))
        out[kind] = {
            "cpu_ms": (time.process_time() - t) / count * 1000,
            "sha256": total.hexdigest(),
        }
    return out


def export(ref: str, into: Path) -> Path:
    """The ``kplate`` package of git ``ref`` written under ``into``; returns ``into``.

    Raises:
        SystemExit: ``ref`` is not a commit of this repository.
    """
    try:
        blob = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "kplate"], check=True, capture_output=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"git archive {ref}: {exc.stderr.decode().strip()}") from exc
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_tree(tree: Path, count: int, seed: int, warmup: int = WARMUP) -> dict[str, dict[str, Any]]:
    """:func:`worker` in a fresh interpreter that imports ``kplate`` from ``tree``."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(tree)!r}); "
        f"sys.path.insert(1, {str(ROOT / 'scripts')!r}); import bench_render as b; "
        f"print(json.dumps(b.worker({count}, {seed}, {warmup})))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(against: str, count: int, rounds: int, seed: int) -> dict[str, Any]:
    """Both trees ``rounds`` times each, in alternating order; medians, ratios, sameness."""
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"ref": export(against, Path(tmp)), "tree": ROOT}
        runs: dict[str, list[dict[str, dict[str, Any]]]] = {"ref": [], "tree": []}
        for r in range(rounds):
            for name in ("ref", "tree") if r % 2 == 0 else ("tree", "ref"):
                runs[name].append(run_tree(trees[name], count, seed))
                print(f"round {r + 1}/{rounds}: {name} done", file=sys.stderr)
    report: dict[str, Any] = {"against": against, "count": count, "rounds": rounds, "kinds": {}}
    for kind in KINDS:
        ms = {n: statistics.median(run[kind]["cpu_ms"] for run in runs[n]) for n in runs}
        report["kinds"][kind] = {
            "ref_cpu_ms": round(ms["ref"], 3),
            "tree_cpu_ms": round(ms["tree"], 3),
            "ratio": round(ms["tree"] / ms["ref"], 3),
            "same_bytes": runs["ref"][0][kind]["sha256"] == runs["tree"][0][kind]["sha256"],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="HEAD", help="git ref to compare with (default HEAD)")
    ap.add_argument("--count", type=int, default=300, help="samples of each kind a round")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each tree, alternating")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    if args.count < 1 or args.rounds < 1:
        ap.error("--count and --rounds must be at least 1")
    report = compare(args.against, args.count, args.rounds, args.seed)
    print(f"| kind | {args.against} ms/sample | tree ms/sample | ratio | same bytes |")
    print("|---|---|---|---|---|")
    for kind, k in report["kinds"].items():
        print(
            f"| {kind} | {k['ref_cpu_ms']:.2f} | {k['tree_cpu_ms']:.2f} | {k['ratio']:.3f} | "
            f"{'yes' if k['same_bytes'] else 'NO'} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
