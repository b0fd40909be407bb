#!/usr/bin/env python3
"""Served versus in-process: throughput and latency of kplate behind TorchServe and the front.

In one run, on the same images (``request/samples`` or generated scenes):

* in-process: ``Recognizer.recognize`` on one decoded image per call (and four per call,
  TorchServe's batchSize), with the worker's thread count;
* TorchServe directly: raw image bytes to ``/predictions/<model>``;
* the KServe front: ``{"instances": [{"data": <base64>}]}`` to ``/v1/models/<model>:predict``;

each served path at concurrency 1, 4 and 8, a bounded number of requests per level, all on
loopback. Reported: images/s, p50 and p95 latency, served/in-process throughput ratios and the
p50 overhead at concurrency 1, against the targets (>= 85 % of in-process throughput at
concurrency 8, <= 15 ms p50 overhead at concurrency 1).

The machine may be shared: the concurrency-1 overhead comes from paired runs (in-process,
TorchServe and the front in turns on the same image, so all three see the same background
load), and in-process throughput is measured before and after the served runs (mean used).

Usage::

    python scripts/bench_serve.py [--mar gs/model-store/kplate.mar] [--requests 48] [--threads 1]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from handler.archive import build_mar  # noqa: E402
from handler.local_serving import LocalServing, Ports, render_config  # noqa: E402

log = logging.getLogger("bench_serve")

CONCURRENCY = (1, 4, 8)
TARGET_THROUGHPUT_RATIO = 0.85
TARGET_P50_OVERHEAD_MS = 15.0


@dataclass
class Result:
    """One measured configuration."""

    path: str
    concurrency: int
    requests: int
    images_per_s: float
    p50_ms: float
    p95_ms: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, linear interpolation."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def measure(
    name: str, call: Callable[[int], int], total: int, concurrency: int, warmup: int = 4
) -> Result:
    """Run ``call(i)`` (returns images handled) ``total`` times on ``concurrency`` threads."""
    for i in range(warmup):
        call(i)
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> int:
        start = time.perf_counter()
        n = call(i)
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed * 1000)
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        images = sum(pool.map(one, range(total)))
    wall = time.perf_counter() - start
    return Result(
        name,
        concurrency,
        total,
        images / wall,
        statistics.median(latencies),
        percentile(latencies, 0.95),
    )


def load_images(count: int) -> list[bytes]:
    """The committed samples, cycled to ``count`` (generated scenes when there are none)."""
    samples = sorted((REPO_ROOT / "request" / "samples").glob("*.jpg"))
    if not samples:
        raise SystemExit("no images in request/samples")
    data = [p.read_bytes() for p in samples]
    return [data[i % len(data)] for i in range(count)]


Call = Callable[[int], int]


def in_process_calls(
    images: list[bytes], threads: int, weights_dir: Path | None
) -> tuple[Call, Call]:
    """``recognize`` in this process (decoding included): one image per call, four per call."""
    import torch

    from kplate import Recognizer
    from kplate.imageio import decode_image

    torch.set_num_threads(threads)
    recognizer = Recognizer.load(weights_dir=weights_dir, device="cpu")

    def single(i: int) -> int:
        with torch.inference_mode():
            recognizer.recognize([decode_image(images[i % len(images)])])
        return 1

    def batch4(i: int) -> int:
        chunk = [decode_image(images[(4 * i + k) % len(images)]) for k in range(4)]
        with torch.inference_mode():
            recognizer.recognize(chunk)
        return 4

    return single, batch4


def served_calls(serving: LocalServing, images: list[bytes]) -> tuple[Call, Call]:
    """One request per call: raw bytes to TorchServe, base64 v1 JSON to the front."""
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    ts_url = f"{serving.inference_url}/predictions/{serving.model_name}"
    front_url = f"{serving.front_url}/v1/models/{serving.model_name}:predict"
    bodies = [
        json.dumps({"instances": [{"data": base64.b64encode(img).decode()}]}).encode()
        for img in images
    ]

    def poster(url: str, payloads: list[bytes], content_type: str) -> Callable[[int], int]:
        def post(i: int) -> int:
            r = session().post(
                url,
                data=payloads[i % len(payloads)],
                headers={"Content-Type": content_type},
                timeout=120,
            )
            r.raise_for_status()
            return 1

        return post

    return (
        poster(ts_url, images, "application/octet-stream"),
        poster(front_url, bodies, "application/json"),
    )


def paired_latency(calls: dict[str, Call], total: int) -> dict[str, float]:
    """p50 latency (ms) of each call, run in turns on the same image, so that all see the
    same background load (the machine may be shared)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(total):
        for name, call in calls.items():
            start = time.perf_counter()
            call(i)
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(
    results: list[Result], in_process_before: Result, in_process_after: Result, paired: dict
) -> dict[str, object]:
    """Print the table and the ratios; return them as a dict."""
    base_thr = (in_process_before.images_per_s + in_process_after.images_per_s) / 2
    batched = next(r for r in results if r.path.startswith("in-process, 4"))
    print(f"{'path':28} {'conc':>4} {'req':>4} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'thr/in-proc':>11}")  # fmt: skip
    for r in [in_process_before, *results, in_process_after]:
        ratio = r.images_per_s / base_thr
        print(f"{r.path:28} {r.concurrency:>4} {r.requests:>4} {r.images_per_s:>7.2f} "
              f"{r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {ratio:>11.2f}")  # fmt: skip
    print(
        "paired p50 at concurrency 1 (ms): "
        + ", ".join(f"{name} {value:.1f}" for name, value in paired.items())
    )
    checks = {}
    for path in ("TorchServe /predictions", "KServe front v1"):
        c8 = next(r for r in results if r.path == path and r.concurrency == 8)
        ratio = c8.images_per_s / base_thr
        overhead = paired[path] - paired["in-process"]
        checks[path] = {
            "throughput_ratio_c8": round(ratio, 3),
            "throughput_ratio_c8_vs_4_per_call": round(c8.images_per_s / batched.images_per_s, 3),
            "p50_overhead_c1_ms": round(overhead, 1),
            "throughput_target_met": ratio >= TARGET_THROUGHPUT_RATIO,
            "latency_target_met": overhead <= TARGET_P50_OVERHEAD_MS,
        }
        print(
            f"{path}: c8 throughput {ratio:.0%} of in-process "
            f"({'ok' if ratio >= TARGET_THROUGHPUT_RATIO else 'MISS'}, target >= 85%), "
            f"{c8.images_per_s / batched.images_per_s:.0%} of in-process 4/call; "
            f"c1 p50 overhead {overhead:+.1f} ms "
            f"({'ok' if overhead <= TARGET_P50_OVERHEAD_MS else 'MISS'}, target <= 15 ms)"
        )
    return {
        "results": [asdict(r) for r in [in_process_before, *results, in_process_after]],
        "paired_p50_c1_ms": {k: round(v, 2) for k, v in paired.items()},
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mar", type=Path, help="archive to serve (default: build one)")
    parser.add_argument(
        "--config", type=Path, default=REPO_ROOT / "gs" / "config" / "config.properties"
    )
    parser.add_argument("--requests", type=int, default=48, help="requests per level (<= 400)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument(
        "--weights-dir", type=Path, help="in-process weights (default: the shipped ones)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench_serve.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    total = max(8, min(args.requests, 400))
    images = load_images(12)
    thread_env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.environ.update(thread_env)

    with tempfile.TemporaryDirectory(prefix="kplate-bench-") as tmp:
        root = Path(tmp)
        store = root / "model-store"
        if args.mar:
            store.mkdir()
            shutil.copy2(args.mar, store / "kplate.mar")
        else:
            build_mar(store)
        ports = Ports.free()
        config = render_config(args.config, root / "config.properties", ports)
        serving = LocalServing(
            config, store, root / "state", front_port=ports.front, env=thread_env
        )
        log.info("starting TorchServe and the front on loopback ...")
        with serving:
            single, batch4 = in_process_calls(images, args.threads, args.weights_dir)
            torchserve, front = served_calls(serving, images)
            for call in (single, torchserve, front):  # warm up every path
                for i in range(4):
                    call(i)
            log.info("paired latency at concurrency 1 ...")
            paired = paired_latency(
                {"in-process": single, "TorchServe /predictions": torchserve,
                 "KServe front v1": front},
                total,
            )  # fmt: skip
            log.info("throughput ...")
            before = measure("in-process, 1 image/call", single, total, 1)
            results = [measure("in-process, 4 images/call", batch4, max(4, total // 4), 1)]
            for conc in CONCURRENCY:
                results.append(measure("TorchServe /predictions", torchserve, total, conc))
                results.append(measure("KServe front v1", front, total, conc))
            after = measure("in-process, 1 image/call", single, total, 1)
    summary = report(results, before, after, paired)
    summary["threads"] = args.threads
    summary["cpu_count"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
