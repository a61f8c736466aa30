"""Time of the full metric suite with bootstrap intervals on a VECBench-sized evaluation (goal: < 5 s, one core).

8,035 items over the nine VECBench tasks in their released sizes (Abstract-8 229, Artphoto-8 806, the others
1,000), confidences on a 0.05 grid with 2% missing and 3% unparsed labels. Times
``emocaliber.metrics.evaluate_items`` (every metric per task, per group in three conventions and overall, with
1,000 stratified bootstrap resamples), then the same with continuous confidences (every value distinct: the
worst case for the per-value counts), then ``emocaliber.report.evaluate_predictions`` from raw responses
(parsing included).

    python bench/metrics_bench.py [--resamples 1000] [--repeat 3] [--seed 0]

The suite makes no BLAS calls, so it runs on one core as it is; ``taskset -c 0`` pins it to make sure.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emocaliber.metrics import evaluate_items
from emocaliber.prompts import format_target
from emocaliber.records import REASONING_PARTS
from emocaliber.report import evaluate_predictions
from emocaliber.tasks import VECBENCH_TASKS, get_task

SIZES = {"Abstract-8": 229, "Artphoto-8": 806}


def synthetic(seed: int, grid: bool) -> tuple[list[str], list[str | None], list[str], list[float | None]]:
    rng = np.random.default_rng(seed)
    tasks, preds, truths, confs = [], [], [], []
    for task in VECBENCH_TASKS:
        labels = get_task(task).labels
        for _ in range(SIZES.get(task, 1000)):
            c = float(rng.uniform(0.3, 1.0))
            if grid:
                c = round(round(c / 0.05) * 0.05, 2)
            truth = labels[rng.integers(len(labels))]
            right = rng.random() < c - 0.1
            pred = truth if right else labels[(labels.index(truth) + 1) % len(labels)]
            tasks.append(task)
            truths.append(truth)
            preds.append(None if rng.random() < 0.03 else pred)
            confs.append(None if rng.random() < 0.02 else c)
    return tasks, preds, truths, confs


def as_rows(tasks, preds, truths, confs) -> list[dict]:
    rows = []
    reasoning = {p: "a short description of the scene" for p in REASONING_PARTS}
    for i, (t, p, g, c) in enumerate(zip(tasks, preds, truths, confs)):
        record = {"id": f"{t}/{i}", "task": t, "image": f"{t}/{i}.jpg", "candidates": list(get_task(t).labels),
                  "ground_truth": g, "split": "test", "source": "bench"}
        text = format_target(reasoning, p or "no idea", c)
        rows.append({"record": record, "sample": 0, "response": text, "error": None})
    return rows


def best_of(repeat: int, fn) -> str:
    """Best wall-clock and best CPU time of ``repeat`` runs (CPU time is what counts on a shared machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return f"{min(walls):6.2f} s wall, {min(cpus):6.2f} s CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many runs (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    grid = synthetic(args.seed, grid=True)
    continuous = synthetic(args.seed, grid=False)
    n = len(grid[0])
    print(f"{n:,} items, {len(VECBENCH_TASKS)} tasks, {args.resamples:,} bootstrap resamples, best of {args.repeat}")
    t = best_of(args.repeat, lambda: evaluate_items(*grid, n_bootstrap=args.resamples, seed=args.seed))
    print(f"metric suite, confidences on a 0.05 grid:     {t}")
    t = best_of(args.repeat, lambda: evaluate_items(*continuous, n_bootstrap=args.resamples, seed=args.seed))
    print(f"metric suite, all confidences distinct:       {t}")
    rows = as_rows(*grid)
    t = best_of(args.repeat, lambda: evaluate_predictions(rows, "strict", n_bootstrap=args.resamples, seed=args.seed))
    print(f"evaluate_predictions (strict parse + suite):  {t}")


if __name__ == "__main__":
    main()
