#!/usr/bin/env python
"""Does stage 2 state the confidence targets it was trained on? Stage 2 on its own training images, per class.

Why: a stage-2 confidence that misses the test accuracy can come from the targets (they say the wrong level),
from fitting (stage 2 does not state its targets even on the images it trained on) or from generalisation (it
states them there, not on new images). Only the second is stage 2's training to fix. This script runs stage 2 on
its training records (``RUN/targets/stage2.jsonl``) with the demo's stage-2 evaluation command (greedy, as the
report reads it), then prints per task and image class (``meta.mix.primary``): the records, their mean target,
the mean confidence stage 2 states for those images, the share of images whose stated confidence is within 0.1
of the image's own target, and the share where stage 2 gives the record's answer (the stage-1 model's greedy one,
which the target scores). The predictions are kept under ``RUN/fit/`` until that stage 2 is retrained.

``--variant NAME`` checks ``RUN/NAME/stage2``, a stage 2 retrained by ``bench/stage3_variant.py --stage2``, on
the same records.

Example: python bench/stage2_fit.py runs/g0 runs/g2
"""

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from stage3_variant import _index, _marker, _replace, run_as_demo

from emocaliber.demo_report import PARSE_MODE
from emocaliber.evaluation import PREDICTIONS_FILE
from emocaliber.parsing import parse_response
from emocaliber.records import iter_jsonl

WITHIN = 0.1


def stage2_on_its_pool(run: Path, variant: str | None) -> tuple[Path, Path]:
    """(the stage-2 training records, stage 2's predictions on them), made by the demo's stage-2 evaluation
    command; kept while they are newer than that stage 2's weights."""
    marker = _marker(run, "eval-stage2")
    model = Path(marker["command"][_index(marker["command"], "--model")])
    if variant:
        model = run / variant / "stage2"
    train = _marker(run, "stage2")["command"]
    records = Path(train[_index(train, "--train_file")])
    out = run / "fit" / (f"{variant}-stage2" if variant else "stage2")
    done, weights = out / "metrics.json", model / "model.safetensors"  # metrics.json is written last
    if not weights.is_file():
        raise SystemExit(f"{weights}: not found; pass a finished demo run (and, with --variant, a variant of it "
                         f"made by bench/stage3_variant.py --stage2)")
    if done.is_file() and done.stat().st_mtime > weights.stat().st_mtime:
        return records, out
    if out.exists():  # from an earlier stage 2: start again rather than resume its predictions
        shutil.rmtree(out)
    command = marker["command"]
    for flag, value in (("--data", records), ("--out", out), ("--model", model), ("--n-bootstrap", 0)):
        command = _replace(command, flag, str(value))
    run_as_demo(command, marker["threads"])
    return records, out


def fit_table(records: Path, predictions: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Per (task, image class): n, mean target, mean stated confidence, share within ``WITHIN`` of the image's
    target, share giving the record's answer. An image whose response states no confidence counts as missed."""
    target = {row["id"]: row for _, row in iter_jsonl(records)}
    cells: dict[tuple[str, str], list[tuple[float, float, bool]]] = defaultdict(list)
    for _, row in iter_jsonl(predictions / PREDICTIONS_FILE):
        record = target[row["record"]["id"]]
        parsed = parse_response(row.get("response") or "", record["candidates"], mode=PARSE_MODE)
        stated = np.nan if parsed.confidence is None else parsed.confidence
        answer = record.get("answer") or record["ground_truth"]
        cells[(record["task"], record["meta"]["mix"]["primary"])].append(
            (record["confidence"], stated, parsed.label == answer))
    out = {}
    for key, items in sorted(cells.items()):
        t, c, same = (np.array(x, dtype=float) for x in zip(*items, strict=True))
        stated = float(np.nanmean(c)) if np.isfinite(c).any() else np.nan
        out[key] = {"n": len(items), "target": float(t.mean()), "stated": stated,
                    "within": float(np.mean(np.abs(c - t) <= WITHIN)), "same_answer": float(same.mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished demo run directories")
    p.add_argument("--variant", help="check RUN/VARIANT/stage2 (bench/stage3_variant.py --stage2) instead")
    args = p.parse_args()
    for run in args.runs:
        records, predictions = stage2_on_its_pool(run, args.variant)
        print(f"{run}{f' ({args.variant})' if args.variant else ''}: stage 2 on its {records.name}")
        print(f"  {'task':12s} {'class':12s} {'n':>4s} {'target':>7s} {'stated':>7s} {'within':>7s} "
              f"{'same answer':>11s}")
        for (task, cls), d in fit_table(records, predictions).items():
            print(f"  {task:12s} {cls:12s} {d['n']:4d} {d['target']:7.2f} {d['stated']:7.2f} {d['within']:7.2f} "
                  f"{d['same_answer']:11.2f}")


if __name__ == "__main__":
    main()
