#!/usr/bin/env python
"""Where a checkpoint's stated confidence is off, per SynthEmo task and image class.

A group's ECE says how far the stated confidence is from the accuracy, not where. On the demo's world the tiny
model's confidence depends on the class it reads from the colour (docs/demo.md), so this prints, per task and
per dominant emotion of the image (``meta.mix.primary``), the accuracy and the mean stated confidence of each
evaluation's predictions next to the oracle's mean confidence, plus each task's ECE and AUROC over
the items that state a confidence (the project's metrics, as in the report) and those of the class oracle, which
answers the oracle's label with its class's mean oracle confidence: the best a model that reads the class, not
the blend, can reach; the per-class gap, which unlike the ECE does not let classes that share a bin cancel. Last,
each confidence bin's share of the ECE and the classes in it.

Example: python bench/confidence_by_class.py runs/demo/eval/stage2 runs/demo/eval/stage3
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from emocaliber.evaluation import PREDICTIONS_FILE
from emocaliber.metrics import auroc, bin_index, ece
from emocaliber.report import load_rows, parse_rows


def by_class(predictions: Path) -> tuple[dict[str, dict[str, tuple[list, list, list]]], int]:
    """``{task: {primary: (confidences, correct, oracle confidences, oracle correct)}}`` over the rows that state a
    confidence, read and judged by the report's own parser, and how many rows were skipped (unreadable or without
    one)."""
    rows, _, unreadable = load_rows(predictions)
    parsed = parse_rows(rows)
    primary = {}
    for _, row in rows:
        record = row.get("record") if isinstance(row, dict) else None
        mix = record.get("meta", {}).get("mix") if isinstance(record, dict) else None
        if isinstance(mix, dict):
            primary[record.get("id")] = mix.get("primary")
    out: dict = defaultdict(lambda: defaultdict(lambda: ([], [], [], [])))
    skipped = len(unreadable) + len(parsed.skipped)
    for rid, task, pred, truth, conf in zip(parsed.record_ids, parsed.tasks, parsed.predictions, parsed.truths,
                                            parsed.confidences, strict=True):
        if conf is None or primary.get(rid) is None:
            skipped += 1
            continue
        cell = out[task][primary[rid]]
        cell[0].append(conf)
        cell[1].append(pred == truth)
        _, gold, label, oracle_conf = parsed.oracle.get(rid, (None, None, None, float("nan")))
        cell[2].append(oracle_conf)
        cell[3].append(label is not None and label == gold)
    return out, skipped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("eval_dirs", nargs="+", type=Path, help="eval/run_vecbench.py output directories on SynthEmo")
    args = p.parse_args()
    for d in args.eval_dirs:
        path = d / PREDICTIONS_FILE
        if not path.is_file():
            raise SystemExit(f"{path}: not found; pass a directory eval/run_vecbench.py wrote")
        classes_by_task, skipped = by_class(path)
        if not classes_by_task:
            raise SystemExit(f"{path}: no row states a confidence on a SynthEmo record (meta.mix); "
                             "pass the evaluation of a stage-2 or stage-3 checkpoint on SynthEmo")
        print(f"{d}  (accuracy / mean stated confidence / oracle's mean confidence; {skipped} rows skipped: "
              "unreadable, without a confidence or not SynthEmo)")
        for task, classes in sorted(classes_by_task.items()):
            conf = np.concatenate([c for c, *_ in classes.values()])
            right = np.concatenate([r for _, r, *_ in classes.values()]).astype(bool)
            print(f"  {task}: n={len(conf)} accuracy={right.mean():.3f} confidence={conf.mean():.3f} "
                  f"ECE={ece(conf, right):.3f} AUROC={auroc(conf, right):.3f}")
            # The best a model can do that reads the class and not the blend: the oracle's label, stated with
            # its class's mean oracle confidence.
            stated = np.concatenate([np.full(len(o), np.nanmean(o)) for _, _, o, _ in classes.values()])
            oracle_right = np.concatenate([k for *_, k in classes.values()]).astype(bool)
            if np.isfinite(stated).all():
                print(f"    class oracle: ECE={ece(stated, oracle_right):.3f} AUROC={auroc(stated, oracle_right):.3f}")
            # ECE pools the classes that share a bin, so an over- and an under-confident class can cancel (seed 1's
            # stage 2 in docs/demo.md); the size-weighted mean of each class's own gap cannot.
            gap = sum(len(c) * abs(np.mean(r) - np.mean(c)) for c, r, *_ in classes.values()) / len(conf)
            print(f"    per-class gap (size-weighted mean |accuracy - confidence| over classes) = {gap:.3f}")
            for primary, (c, r, o, _) in sorted(classes.items()):
                print(f"    {primary:12s} n={len(c):4d}  {np.mean(r):.2f} / {np.mean(c):.2f} / {np.nanmean(o):.2f}")
            names = np.concatenate([[name] * len(c) for name, (c, *_) in classes.items()])
            print_ece_by_bin(conf, right, names)


def print_ece_by_bin(conf: np.ndarray, right: np.ndarray, names: np.ndarray) -> None:
    """Each canonical bin's share of ECE (its |B|/N |acc - conf|, in points x100; the shares sum to the ECE):
    a class is only off in the ECE where its bin's pooled accuracy is off, not where its own is."""
    bins = bin_index(conf, 10)
    for b in np.unique(bins):
        m = bins == b
        gap = abs(conf[m].mean() - right[m].mean())
        counts = Counter(names[m]).most_common()
        print(f"    bin [{b / 10:.1f}, {(b + 1) / 10:.1f}) n={m.sum():4d} confidence {conf[m].mean():.2f} "
              f"accuracy {right[m].mean():.2f} -> {100 * gap * m.sum() / len(conf):.1f} of ECE  "
              + ", ".join(f"{k} {v}" for k, v in counts))


if __name__ == "__main__":
    main()
