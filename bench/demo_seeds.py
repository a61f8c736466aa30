#!/usr/bin/env python
"""How much the demo varies by seed: stage 3 against stage 2 over finished demo runs, one row per run and group.

For each run directory (``emocaliber demo --out runs/kS --seed S``) it reads ``stages.json`` (nothing is
recomputed) and prints the step stage 3 handed on, then per group the stage-2 and stage-3 ECE and accuracy and the
paired 95% intervals of the ECE ratio, Brier difference and AUROC difference on the same test images, each with
its verdict. The last lines check what stage 3 must never do, over all runs: be significantly worse than stage 2
on a group (an interval wholly on the wrong side of no change), raise the mean in-distribution Brier score, or
move accuracy by more than 1 point.

Example: for S in 0 1 2 3 4; do emocaliber demo --out runs/k$S --seed $S; done
         python bench/demo_seeds.py runs/k0 runs/k1 runs/k2 runs/k3 runs/k4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

IN_DISTRIBUTION = ("Synth VSA", "Synth VER")
WORSE = "significantly worse"


def _interval(name: str, stat: dict) -> str:
    if stat["point"] is None:
        return "–"
    if name == "ece_ratio":
        return f"x{stat['point']:.2f} [{stat['low']:.2f}, {stat['high']:.2f}]"
    return f"{100 * stat['point']:+.2f} [{100 * stat['low']:+.2f}, {100 * stat['high']:+.2f}]"


def _mark(stat: dict) -> str:
    return {"significantly better": " +", WORSE: " WORSE"}.get(stat["verdict"], "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished demo run directories")
    args = p.parse_args()
    print("| run | step | group | acc 2 -> 3 | ECE 2 -> 3 | ECE ratio 3/2 | Brier 3 - 2 (x100) | AUROC 3 - 2 (x100) |")
    print("|---|---|---|---|---|---|---|---|")
    worse, acc_moves, briers = [], [], {"stage2": [], "stage3": []}
    for run in args.runs:
        try:
            stages = json.loads((run / "stages.json").read_text())
            groups = stages["stage3_vs_stage2"]["groups"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"{run}: no finished demo's stages.json with stage3_vs_stage2 ({e}); run the demo "
                             "there first") from None
        selection = stages.get("stage3_selection") or {}
        step = selection.get("selected_step", "last")
        for group, entry in groups.items():
            s2, s3 = stages["stage2"][group], stages["stage3"][group]
            cells = [f"{_interval(n, entry[n])}{_mark(entry[n])}" for n in ("ece_ratio", "brier_diff", "auroc_diff")]
            print(f"| {run.name} | {step} | {group} | {100 * s2['accuracy']:.1f} -> {100 * s3['accuracy']:.1f} | "
                  f"{100 * s2['ece']:.1f} -> {100 * s3['ece']:.1f} | " + " | ".join(cells) + " |")
            worse += [f"{run.name} {group} {n}" for n in ("ece_ratio", "brier_diff", "auroc_diff")
                      if entry[n]["verdict"] == WORSE]
            acc_moves.append(abs(s3["accuracy"] - s2["accuracy"]))
            if group in IN_DISTRIBUTION:
                for stage, values in briers.items():
                    values.append(stages[stage][group]["brier"])
    mean = {stage: sum(v) / len(v) for stage, v in briers.items()}
    print()
    print(f"groups where stage 3 is significantly worse than stage 2: {len(worse)}"
          + (f" ({', '.join(worse)})" if worse else ""))
    print(f"mean in-distribution Brier (x100): stage 2 {100 * mean['stage2']:.2f}, stage 3 {100 * mean['stage3']:.2f}"
          f" ({'at most' if mean['stage3'] <= mean['stage2'] else 'ABOVE'} stage 2's)")
    print(f"largest accuracy move from stage 2 to stage 3: {100 * max(acc_moves):.1f} points"
          f" ({'within' if max(acc_moves) <= 0.01 else 'MORE THAN'} 1 point)")


if __name__ == "__main__":
    main()
