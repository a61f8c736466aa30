#!/usr/bin/env python
"""The demo's targets, checked on finished demo runs: which hold, which miss and by how much.

The targets, per in-distribution group (Synth VSA, Synth VER): stage 1 parses (>= 0.98) and reaches 0.9 of the
oracle's accuracy; stage 2 states a confidence (>= 0.98) and keeps stage 1's accuracy within 2 points; stage 3
keeps stage 2's accuracy within 1 point, cuts stage 2's ECE by at least 30%, comes within 0.03 of the oracle's
ECE, keeps stage 2's AUROC and reaches 0.9 of the oracle's. For each run directory (``emocaliber demo --out DIR``)
it reads the stage table the report is built from (``emocaliber.demo_report.stage_rows``) and prints every
target. ``--stage3 EVAL_DIR`` (repeatable) checks another evaluation in place of the run's stage 3 (a stage 3
trained another way from the same stage 2 and evaluated as the demo evaluates it); ``--stage2 EVAL_DIR`` likewise
replaces stage 2. The last line counts the stage-3 misses (five checks per group).

Each run also gets a paired comparison of stage 3 with stage 2 on the same test images (``emocaliber.paired``, as
the demo's report): the ECE ratio, the Brier and the AUROC difference, each with a 95% percentile interval over
``--paired`` resamples of the images (0 = none) and its verdict. Each evaluation's own interval is wider than that
of a difference on the same images; an interval that holds the target's boundary (a difference of 0, a ratio of
0.7) marks a miss or a hit the test set cannot tell apart. A 30% cut that asks for an ECE below the oracle's own
on the same images is marked as such.

Example: python bench/demo_targets.py runs/demo
         python bench/demo_targets.py runs/s0 runs/s1 runs/s2 runs/s3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emocaliber import paired
from emocaliber.demo_report import PARSE_MODE, eval_rows, stage_rows

GROUPS = ("Synth VSA", "Synth VER")  # in distribution; Synth OOD has no target
ECE_CUT = 0.7  # stage 3's ECE must be at most this fraction of stage 2's (30% lower)


def _check(stage: str, name: str, holds, measured, *values: float | None) -> tuple[str, str, bool, str]:
    """One target; a value the evaluation could not measure (None: no confidence parsed, or every answer right or
    every answer wrong, so no AUROC) misses it."""
    if any(v is None for v in values):
        return stage, name, False, "not measured"
    return stage, name, holds(*values), measured(*values)


def _cut(s3: float, s2: float, oracle: float) -> str:
    """The ECE change, and whether the cut asks for less than the oracle's own ECE on these images: labels are
    draws, so even the oracle's ECE is not 0, and a stage 2 near it leaves a 30% cut only below it."""
    text = f"{100 * (s3 / s2 - 1):+.0f}%" if s2 else f"{100 * s3:.1f} against 0"
    return text + (f" (asks for {100 * ECE_CUT * s2:.2f}, below the oracle's {100 * oracle:.2f})"
                   if ECE_CUT * s2 < oracle else "")


def checks(table: dict, stage3: dict) -> list[tuple[str, str, bool, str]]:
    """(stage, target, holds, measured) for every target, per in-distribution group."""
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
            _check("stage3", f"{g} stage 3 ECE >= 30% below stage 2", lambda a, b, _: a <= ECE_CUT * b, _cut,
                   s3["ece"], s2["ece"], o["ece"]),
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
    p.add_argument("--stage2", type=Path, action="append", default=[],
                   help="an evaluation directory to check in place of each run's stage 2, for a variant that "
                        "retrained stage 2 (one per run, in order)")
    p.add_argument("--paired", type=int, default=1000, metavar="N",
                   help="resamples of the paired stage-3 against stage-2 comparison, 0 = none (default %(default)s)")
    args = p.parse_args()
    for flag, given in (("--stage3", args.stage3), ("--stage2", args.stage2)):
        if given and len(given) != len(args.runs):
            p.error(f"{flag} given {len(given)} times for {len(args.runs)} runs; give one per run")
    total = 0
    for i, run in enumerate(args.runs):
        try:
            table = stage_rows(run)
            stage3 = eval_rows(args.stage3[i], True)[0] if args.stage3 else table["stage3"]
            if args.stage2:
                table = dict(table, stage2=eval_rows(args.stage2[i], True)[0])
        except FileNotFoundError as e:
            raise SystemExit(f"{e.filename}: not found; pass a finished demo run (and evaluations of it)") from None
        except ValueError as e:
            raise SystemExit(str(e)) from None
        print(f"{run}" + (f"  (stage 2: {args.stage2[i]})" if args.stage2 else "")
              + (f"  (stage 3: {args.stage3[i]})" if args.stage3 else ""))
        misses = 0
        for stage, name, holds, measured in checks(table, stage3):
            misses += not holds and stage == "stage3"
            print(f"  {'ok  ' if holds else 'MISS'} {name}: {measured}")
        print(f"  stage-3 misses: {misses} of 10")
        if args.paired > 0:
            stage3_dir = args.stage3[i] if args.stage3 else run / "eval" / "stage3"
            stage2_dir = args.stage2[i] if args.stage2 else run / "eval" / "stage2"
            comparison = paired.compare_predictions(stage2_dir / "predictions.jsonl", stage3_dir / "predictions.jsonl",
                                                    args.paired, groups=GROUPS, parse_mode=PARSE_MODE)
            for g, d in comparison.items():
                print(f"  paired on {d['n']} {g} images (95% of {args.paired} resamples), stage 3 against stage 2: "
                      + "; ".join(f"{name} {paired.describe(name, d[name])} ({d[name]['verdict']})"
                                  for name in paired.STATISTICS))
        total += misses
    print(f"stage-3 misses over {len(args.runs)} runs: {total}")


if __name__ == "__main__":
    main()
