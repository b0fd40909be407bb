"""Training-step benchmark: the detector and the reader side by side, as ``make train`` runs them.

``make train`` trains both models at once on a 2-core machine (detector 1 torch thread, reader
2). This script times their optimiser steps under each environment below (OpenMP wait policy,
glibc malloc thresholds), alternating them round by round, and reports every figure as a ratio
to the baseline measured in the same run (these machines are noisy): ``default``, nothing set,
as ``make train`` ran before it set ``PASSIVE``. Data rendering is not timed: only the steps.

With ``--detector-nice N ...`` it compares the detector's scheduling priorities instead (under
the Makefile's environment, ``TRAIN_ENV``), each as a ratio to the first level given: a niced
detector leaves the reader more of the cores, while priorities change no result (the steps'
arithmetic is the same), so ``make train`` can trade the detector's slack for the reader's
critical path (reader, then crop reader).

    .venv/bin/python scripts/bench_train_threads.py [--seconds 40] [--rounds 2] [--json OUT]
    .venv/bin/python scripts/bench_train_threads.py --detector-nice 0 3 5
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
#: The environment ``make train`` runs in (the Makefile's TRAIN_ENV).
MAKE_TRAIN = "PASSIVE+malloc"
ENVIRONMENTS: dict[str, dict[str, str]] = {
    BASELINE: {},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "PASSIVE+malloc": {"OMP_WAIT_POLICY": "PASSIVE", **MALLOC_ENV},
}


def worker(task: str, threads: int, start: float, end: float) -> dict[str, float]:
    """Run optimiser steps of ``task`` on freshly rendered data until wall-clock time ``end``;
    the mean seconds of the steps run wholly between ``start`` and ``end`` (so that two
    workers given the same window are timed only while both run), and their count."""
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
    times, step = [], 0
    while time.time() < end:
        batch = next(batches)
        t0 = time.time()
        optimiser_step(model, opt, loss_fn, batch, step)
        t1 = time.time()
        step += 1
        if t0 >= start and t1 <= end:
            times.append(t1 - t0)
    if len(times) < 3:
        raise RuntimeError(f"{task}: {len(times)} steps in the window; give it more --seconds")
    return {"s_per_step": statistics.fmean(times), "steps": len(times)}


#: Seconds the workers get to start and render their data before the timed window opens.
SETUP_S = 30.0


def side_by_side(name: str, seconds: float, detector_nice: int = 0) -> dict[str, float]:
    """Run both workers at once in environment ``name``, the detector's at niceness
    ``detector_nice``, timed over the same ``seconds``; each one's mean seconds per step
    (:func:`worker`)."""
    unset = {k for e in ENVIRONMENTS.values() for k in e}  # the variables any of them sets
    env = {k: v for k, v in os.environ.items() if k not in unset} | ENVIRONMENTS[name]
    start = time.time() + SETUP_S
    window = [str(start), str(start + seconds)]
    niced: dict[str, list[str]] = {task: [] for task, _ in PAIR}
    if detector_nice:
        niced["detector"] = ["nice", "-n", str(detector_nice)]
    procs = {
        task: subprocess.Popen(
            [*niced[task], sys.executable, __file__, "--worker", task, str(threads), *window],
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
    ap.add_argument(
        "--seconds", type=float, default=40.0, help="timed window of each run, both workers"
    )
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each trying every environment")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--detector-nice",
        type=int,
        nargs="+",
        metavar="N",
        help="compare these niceness levels of the detector (in make train's environment), "
        "as ratios to the first, instead of the environments",
    )
    ap.add_argument(
        "--worker", nargs=4, metavar=("TASK", "THREADS", "START", "END"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.worker:
        task, threads, start, end = args.worker
        print(json.dumps(worker(task, int(threads), float(start), float(end))))
        return 0
    if args.seconds <= 0 or args.rounds < 1:
        ap.error("--seconds must be > 0 and --rounds at least 1")
    # what each condition runs: (environment, the detector's niceness)
    conditions = {name: (name, 0) for name in ENVIRONMENTS}
    if args.detector_nice:
        if any(not 0 <= n <= 19 for n in args.detector_nice):
            ap.error("--detector-nice levels must be in 0..19")
        conditions = {f"detector nice {n}": (MAKE_TRAIN, n) for n in args.detector_nice}
    baseline = next(iter(conditions)) if args.detector_nice else BASELINE
    runs: dict[str, dict[str, list[float]]] = {c: {t: [] for t, _ in PAIR} for c in conditions}
    for r in range(args.rounds):
        for name, (env_name, nice) in conditions.items():
            for task, s in side_by_side(env_name, args.seconds, nice).items():
                runs[name][task].append(s)
            sys.stderr.write(f"round {r + 1}/{args.rounds} {name}: done\n")
    report = {
        name: {
            task: {
                "s_per_step": statistics.median(xs),
                "ratio_to_default": statistics.median(xs) / statistics.median(runs[baseline][task]),
            }
            for task, xs in per_task.items()
        }
        for name, per_task in runs.items()
    }
    print(f"| condition | task | threads | s per step | ratio to {baseline} |")
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
