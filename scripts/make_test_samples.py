"""Render the synthetic images committed under tests/data/synthetic (and request/samples).

Deterministic: scenes of seed 4242 whose plates are all at least 20% of the image width
(so a person can read them too), and the first crops of seed 4243 at least 40 pixels high. Re-running gives the same
bytes; nothing here looks at a model.

    .venv/bin/python scripts/make_test_samples.py tests/data/synthetic --scenes 6 --crops 6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from kplate.synth import render_crop, render_scene


def _jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out", type=Path)
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--crops", type=int, default=6)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--height", type=int, default=600)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    found, i = 0, 0
    while found < args.scenes:
        s = render_scene(4242, i, args.width, args.height)
        i += 1
        if not s.plates or any(p.box[2] - p.box[0] < 0.2 * args.width for p in s.plates):
            continue
        name = f"scene_{found + 1}.jpg"
        _jpeg(args.out / name, s.image)
        rows += [{"file": name, "kind": "scene", **p.to_json()} for p in s.plates]
        found += 1
    kept, k = 0, 0
    while kept < args.crops:
        s = render_crop(4243, k)
        k += 1
        if s.image.shape[0] < 40:  # keep crops a person can read
            continue
        kept += 1
        name = f"crop_{kept}.jpg"
        _jpeg(args.out / name, s.image)
        rows += [{"file": name, "kind": "crop", **p.to_json()} for p in s.plates]
    with (args.out / "labels.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    sys.stdout.write(f"wrote {found} scenes and {args.crops} crops to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
