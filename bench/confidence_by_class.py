#!/usr/bin/env python
"""Where a checkpoint's stated confidence is off, per SynthEmo task and image class.

A group's ECE says how far the stated confidence is from the accuracy, not where. On the demo's world the tiny
model's confidence depends on the class it reads from the colour (docs/demo.md), so this prints, per task and
per dominant emotion of the image (``meta.mix.primary``), the accuracy and the mean stated confidence of each
evaluation's predictions next to the oracle's mean confidence, plus each task's ECE and AUROC over
the items that state a confidence (the project's metrics, as in the report).

Example: python bench/confidence_by_class.py runs/demo/eval/stage2 runs/demo/eval/stage3
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from emocaliber.evaluation import PREDICTIONS_FILE
from emocaliber.metrics import auroc, ece
from emocaliber.parsing import parse_response


def by_class(predictions: Path) -> dict[str, dict[str, tuple[list[float], list[bool], list[float]]]]:
    """``{task: {primary: (confidences, correct, oracle confidences)}}`` over items that state a confidence."""
    out: dict = defaultdict(lambda: defaultdict(lambda: ([], [], [])))
    with predictions.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            record = row["record"]
            parsed = parse_response(row.get("response") or "", record["candidates"])
            if parsed.confidence is None:
                continue
            cell = out[record["task"]][record["meta"]["mix"]["primary"]]
            cell[0].append(parsed.confidence)
            cell[1].append(parsed.label == record["ground_truth"])
            cell[2].append(record["meta"].get("oracle_confidence", float("nan")))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("eval_dirs", nargs="+", type=Path, help="eval/run_vecbench.py output directories on SynthEmo")
    args = p.parse_args()
    for d in args.eval_dirs:
        path = d / PREDICTIONS_FILE
        if not path.is_file():
            raise SystemExit(f"{path}: not found; pass a directory eval/run_vecbench.py wrote")
        print(f"{d}  (accuracy / mean stated confidence / oracle's mean confidence)")
        for task, classes in sorted(by_class(path).items()):
            conf = np.concatenate([c for c, _, _ in classes.values()])
            right = np.concatenate([r for _, r, _ in classes.values()]).astype(bool)
            print(f"  {task}: n={len(conf)} accuracy={right.mean():.3f} confidence={conf.mean():.3f} "
                  f"ECE={ece(conf, right):.3f} AUROC={auroc(conf, right):.3f}")
            for primary, (c, r, o) in sorted(classes.items()):
                print(f"    {primary:12s} n={len(c):4d}  {np.mean(r):.2f} / {np.mean(c):.2f} / {np.nanmean(o):.2f}")


if __name__ == "__main__":
    main()
