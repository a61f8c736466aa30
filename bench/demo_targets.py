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


def checks(table: dict, stage3: dict) -> list[tuple[str, str, bool, str]]:
    """(stage, target, holds, measured) for every target of the issue, per in-distribution group."""
    out = []
    for g in GROUPS:
        s1, s2, s3, o = table["stage1"][g], table["stage2"][g], stage3[g], table["oracle"][g]
        out += [
            ("stage1", f"{g} stage 1 parse rate >= 0.98", s1["parse_rate"] >= 0.98, f"{s1['parse_rate']:.3f}"),
            ("stage1", f"{g} stage 1 accuracy >= 0.9 x oracle", s1["accuracy"] >= 0.9 * o["accuracy"],
             f"{s1['accuracy'] / o['accuracy']:.2f} x"),
            ("stage2", f"{g} stage 2 confidence parsed >= 0.98", s2["parse_rate"] >= 0.98, f"{s2['parse_rate']:.3f}"),
            ("stage2", f"{g} stage 2 accuracy within 2 points of stage 1", abs(s2["accuracy"] - s1["accuracy"]) <= 0.02,
             f"{100 * (s2['accuracy'] - s1['accuracy']):+.1f}"),
            ("stage3", f"{g} stage 3 ECE >= 30% below stage 2", s3["ece"] <= 0.7 * s2["ece"],
             f"{100 * (s3['ece'] / s2['ece'] - 1):+.0f}%"),
            ("stage3", f"{g} stage 3 accuracy within 1 point of stage 2", abs(s3["accuracy"] - s2["accuracy"]) <= 0.01,
             f"{100 * (s3['accuracy'] - s2['accuracy']):+.1f}"),
            ("stage3", f"{g} stage 3 ECE within 0.03 of oracle", s3["ece"] - o["ece"] <= 0.03,
             f"{100 * (s3['ece'] - o['ece']):+.1f} points"),
            ("stage3", f"{g} stage 3 AUROC >= stage 2", s3["auroc"] >= s2["auroc"], f"{100 * (s3['auroc'] - s2['auroc']):+.2f}"),
            ("stage3", f"{g} stage 3 AUROC >= 0.9 x oracle", s3["auroc"] >= 0.9 * o["auroc"],
             f"{s3['auroc'] / o['auroc']:.2f} x"),
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
