#!/usr/bin/env python
"""Issue 11's targets, checked on finished demo runs: which hold, which miss and by how much.

For each run directory (``python -m emocaliber.demo --out DIR``) it reads the stage table the report is built from
(``emocaliber.demo_report.stage_rows``) and prints every target per in-distribution group. ``--stage3 EVAL_DIR``
(repeatable) checks another evaluation in place of the run's stage 3, for a stage-3 variant trained from the same
stage 2 and evaluated as the demo evaluates it. The last line counts the stage-3 misses (five checks per group).

Example: python bench/demo_targets.py runs/d0 runs/d1 runs/d2
         python bench/demo_targets.py runs/d0 --stage3 runs/d0/x-g4/eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emocaliber.demo_report import eval_rows, stage_rows

GROUPS = ("Synth VSA", "Synth VER")  # in distribution; Synth OOD has no target


def _check(stage: str, name: str, holds, measured, *values: float | None) -> tuple[str, str, bool, str]:
    """One target; a value the evaluation could not measure (None: no confidence parsed, or every answer right or
    every answer wrong, so no AUROC) misses it."""
    if any(v is None for v in values):
        return stage, name, False, "not measured"
    return stage, name, holds(*values), measured(*values)


def checks(table: dict, stage3: dict) -> list[tuple[str, str, bool, str]]:
    """(stage, target, holds, measured) for every target of the issue, per in-distribution group."""
    out = []
    for g in GROUPS:
        s1, s2, s3, o = table["stage1"][g], table["stage2"][g], stage3[g], table["oracle"][g]
        out += [
            _check("stage1", f"{g} stage 1 parse rate >= 0.98", lambda p: p >= 0.98, lambda p: f"{p:.3f}",
                   s1["parse_rate"]),
            _check("stage1", f"{g} stage 1 accuracy >= 0.9 x oracle", lambda a, b: a >= 0.9 * b,
                   lambda a, b: f"{a / b:.2f} x", s1["accuracy"], o["accuracy"]),
            _check("stage2", f"{g} stage 2 confidence parsed >= 0.98", lambda p: p >= 0.98, lambda p: f"{p:.3f}",
                   s2["parse_rate"]),
            _check("stage2", f"{g} stage 2 accuracy within 2 points of stage 1", lambda a, b: abs(a - b) <= 0.02,
                   lambda a, b: f"{100 * (a - b):+.1f}", s2["accuracy"], s1["accuracy"]),
            _check("stage3", f"{g} stage 3 ECE >= 30% below stage 2", lambda a, b: a <= 0.7 * b,
                   lambda a, b: f"{100 * (a / b - 1):+.0f}%" if b else f"{100 * a:.1f} against 0",
                   s3["ece"], s2["ece"]),
            _check("stage3", f"{g} stage 3 accuracy within 1 point of stage 2", lambda a, b: abs(a - b) <= 0.01,
                   lambda a, b: f"{100 * (a - b):+.1f}", s3["accuracy"], s2["accuracy"]),
            _check("stage3", f"{g} stage 3 ECE within 0.03 of oracle", lambda a, b: a - b <= 0.03,
                   lambda a, b: f"{100 * (a - b):+.1f} points", s3["ece"], o["ece"]),
            _check("stage3", f"{g} stage 3 AUROC >= stage 2", lambda a, b: a >= b,
                   lambda a, b: f"{100 * (a - b):+.2f}", s3["auroc"], s2["auroc"]),
            _check("stage3", f"{g} stage 3 AUROC >= 0.9 x oracle", lambda a, b: a >= 0.9 * b,
                   lambda a, b: f"{a / b:.2f} x", s3["auroc"], o["auroc"]),
        ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="demo run directories")
    p.add_argument("--stage3", type=Path, action="append", default=[],
                   help="an evaluation directory to check in place of each run's stage 3 (one per run, in order)")
    args = p.parse_args()
    if args.stage3 and len(args.stage3) != len(args.runs):
        p.error(f"--stage3 given {len(args.stage3)} times for {len(args.runs)} runs; give one per run")
    total = 0
    for i, run in enumerate(args.runs):
        try:
            table = stage_rows(run)
            stage3 = eval_rows(args.stage3[i], True)[0] if args.stage3 else table["stage3"]
        except FileNotFoundError as e:
            raise SystemExit(f"{e.filename}: not found; pass a finished demo run (and evaluations of it)") from None
        except ValueError as e:
            raise SystemExit(str(e)) from None
        print(f"{run}" + (f"  (stage 3: {args.stage3[i]})" if args.stage3 else ""))
        misses = 0
        for stage, name, holds, measured in checks(table, stage3):
            misses += not holds and stage == "stage3"
            print(f"  {'ok  ' if holds else 'MISS'} {name}: {measured}")
        print(f"  stage-3 misses: {misses} of 10")
        total += misses
    print(f"stage-3 misses over {len(args.runs)} runs: {total}")


if __name__ == "__main__":
    main()
