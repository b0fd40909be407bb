"""Compare two ``kplate eval --json`` reports of the same labelled folder, plate by plate.

Two weights measured on the same images differ in which plates they get right, and most of a
small difference is retrain noise. This prints, for scene plates (found and read exactly)
and for crops (read exactly), how many each report got right, the plates only one of them got
right, the false plates of each, and the exact McNemar p-value of the difference (two-sided
binomial test on the plates only one got right): a p-value well above 0.05 says the two are
not told apart by these images.

    .venv/bin/python scripts/compare_eval.py BEFORE.json AFTER.json [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy.stats import binomtest


class ReportMismatchError(ValueError):
    """The two reports are not of the same labelled images."""


@dataclass(frozen=True)
class Paired:
    """One kind of sample (scene plates or crops) judged in two reports."""

    kind: str
    total: int
    right_before: int
    right_after: int
    #: ``(file, label)`` of the samples only the after report got right, and only the before.
    newly_right: tuple[tuple[str, str], ...]
    newly_wrong: tuple[tuple[str, str], ...]
    #: Two-sided exact McNemar p-value (1.0 when no sample changed).
    p_value: float


def _wrong(report: dict[str, Any], kind: str) -> Counter[tuple[str, str]]:
    """The ``(file, label)`` of each labelled sample of ``kind`` a report did not get right."""
    return Counter(
        (f["file"], f["truth"]) for f in report["failures"] if f["kind"] == kind and "truth" in f
    )


def _totals(report: dict[str, Any]) -> dict[str, int]:
    return {
        "scene": int(report["scenes"]["overall"]["plates"]) if report["scenes"] else 0,
        "crop": int(report["crops"]["overall"]["crops"]) if report["crops"] else 0,
    }


def paired(before: dict[str, Any], after: dict[str, Any]) -> list[Paired]:
    """The plate-by-plate comparison of two reports, for each kind of sample they hold.

    Raises:
        ReportMismatchError: the reports hold different numbers of scene plates or crops.
    """
    totals = _totals(before)
    if totals != _totals(after):
        raise ReportMismatchError(
            f"the reports are not of the same images: {totals} vs {_totals(after)} "
            "(scene plates and crops)"
        )
    out = []
    for kind, total in totals.items():
        if not total:
            continue
        wb, wa = _wrong(before, kind), _wrong(after, kind)
        newly_right, newly_wrong = wb - wa, wa - wb
        n_right, n_wrong = sum(newly_right.values()), sum(newly_wrong.values())
        p = binomtest(n_right, n_right + n_wrong).pvalue if n_right + n_wrong else 1.0
        out.append(
            Paired(
                kind=kind,
                total=total,
                right_before=total - sum(wb.values()),
                right_after=total - sum(wa.values()),
                newly_right=tuple(sorted(newly_right.elements())),
                newly_wrong=tuple(sorted(newly_wrong.elements())),
                p_value=float(p),
            )
        )
    return out


def false_plates(report: dict[str, Any]) -> int:
    """How many plates a report returned that match no labelled plate."""
    return sum(1 for f in report["failures"] if "false_plate" in f)


def describe(before: dict[str, Any], after: dict[str, Any], rows: Sequence[Paired]) -> str:
    """A plain-text account of ``rows``, with the false plates of each report."""
    lines = []
    for r in rows:
        what = "scene plates found and read exactly" if r.kind == "scene" else "crops read exactly"
        lines.append(
            f"{what}: {r.right_before} -> {r.right_after} of {r.total} "
            f"({100 * (r.right_after - r.right_before) / r.total:+.2f} points); "
            f"{len(r.newly_right)} newly right, {len(r.newly_wrong)} newly wrong, "
            f"McNemar p = {r.p_value:.3g}"
        )
        lines += [f"  + {file}: {label}" for file, label in r.newly_right]
        lines += [f"  - {file}: {label}" for file, label in r.newly_wrong]
        if r.kind == "scene":
            lines.append(f"false plates: {false_plates(before)} -> {false_plates(after)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Compare two `kplate eval --json` reports of the same folder, plate by plate."
    )
    ap.add_argument("before", type=Path, help="report of the weights compared against")
    ap.add_argument("after", type=Path, help="report of the weights under test")
    ap.add_argument("--json", type=Path, help="also write the comparison here")
    args = ap.parse_args(argv)
    try:
        before, after = (
            json.loads(p.read_text(encoding="utf-8")) for p in (args.before, args.after)
        )
        rows = paired(before, after)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"compare_eval: {e}\n")
        return 2
    except (KeyError, TypeError) as e:
        sys.stderr.write(f"compare_eval: not a `kplate eval --json` report (no {e})\n")
        return 2
    sys.stdout.write(f"{before['folder']} -> {after['folder']}\n")
    sys.stdout.write(describe(before, after, rows) + "\n")
    if args.json:
        args.json.write_text(
            json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=1), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
