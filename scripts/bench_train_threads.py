"""Training-step benchmark: the detector and the reader side by side, as ``make train`` runs them.

``make train`` trains both models at once on a 2-core machine (detector 1 torch thread, reader
2). This script times their optimiser steps under each environment below (OpenMP wait policy,
glibc malloc thresholds), alternating them round by round, and reports every figure as a ratio
to the baseline measured in the same run (these machines are noisy): ``default``, nothing set,
as ``make train`` ran before it set ``PASSIVE``. Data rendering is not timed: only the steps.

    .venv/bin/python scripts/bench_train_threads.py [--steps 30] [--rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: (task, torch threads) exactly as the Makefile's train-detector and train-reader use them.
PAIR = (("detector", 1), ("reader", 2))
#: glibc's malloc keeps freed memory for reuse instead of handing every large block back to the
#: kernel (each step's activations otherwise come from fresh, zero-filled pages). The
#: Makefile's TRAIN_ENV sets the same.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967295", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
#: "default" sets nothing (libgomp then spins a while before sleeping).
BASELINE = "default"
ENVIRONMENTS: dict[str, dict[str, str]] = {
    BASELINE: {},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "PASSIVE+malloc": {"OMP_WAIT_POLICY": "PASSIVE", **MALLOC_ENV},
}


def worker(task: str, threads: int, steps: int) -> dict[str, float]:
    """Time ``steps`` optimiser steps of ``task`` on freshly rendered data (one JSON line)."""
    import torch

    from kplate.config import load_config
    from kplate.train.engine import cycle, optimiser_step
    from kplate.train.tasks import DEFAULTS, training_setup

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch_size = DEFAULTS[task]["batch_size"]
    model, loader, loss_fn = training_setup(
        task, load_config(None), 7, 4 * batch_size, batch_size, workers=1, progress=False
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = cycle(loader)
    times = []
    for step in range(steps + 2):
        batch = next(batches)
        t = time.perf_counter()
        optimiser_step(model, opt, loss_fn, batch, step)
        times.append(time.perf_counter() - t)
    return {"s_per_step": statistics.median(times[2:])}


def side_by_side(name: str, steps: int) -> dict[str, float]:
    """Run both workers at once in environment ``name``; median seconds per step of each."""
    unset = {k for e in ENVIRONMENTS.values() for k in e}  # the variables any of them sets
    env = {k: v for k, v in os.environ.items() if k not in unset} | ENVIRONMENTS[name]
    procs = {
        task: subprocess.Popen(
            [sys.executable, __file__, "--worker", task, str(threads), str(steps)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for task, threads in PAIR
    }
    out = {}
    for task, proc in procs.items():
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{task} worker failed with exit status {proc.returncode}")
        out[task] = json.loads(stdout.strip().splitlines()[-1])["s_per_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=30, help="timed steps per worker and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each trying every environment")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--worker", nargs=3, metavar=("TASK", "THREADS", "STEPS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.worker:
        task, threads, steps = args.worker
        print(json.dumps(worker(task, int(threads), int(steps))))
        return 0
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be at least 1")
    runs: dict[str, dict[str, list[float]]] = {e: {t: [] for t, _ in PAIR} for e in ENVIRONMENTS}
    for r in range(args.rounds):
        for name in ENVIRONMENTS:
            for task, s in side_by_side(name, args.steps).items():
                runs[name][task].append(s)
            sys.stderr.write(f"round {r + 1}/{args.rounds} {name}: done\n")
    report = {
        name: {
            task: {
                "s_per_step": statistics.median(xs),
                "ratio_to_default": statistics.median(xs) / statistics.median(runs[BASELINE][task]),
            }
            for task, xs in per_task.items()
        }
        for name, per_task in runs.items()
    }
    print("| environment | task | threads | s per step | ratio to default |")
    print("|---|---|---|---|---|")
    threads_of = dict(PAIR)
    for name, per_task in report.items():
        for task, fig in per_task.items():
            print(
                f"| {name} | {task} | {threads_of[task]} | {fig['s_per_step']:.3f} "
                f"| {fig['ratio_to_default']:.2f} |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
