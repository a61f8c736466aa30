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

Each run also gets a paired comparison of stage 3 with stage 2 on the same test images: the AUROC difference and
the ECE ratio, each with a 95% percentile interval over ``--paired`` resamples of the images (0 = none). Each
evaluation's own interval is wider than that of a difference on the same images; an interval that holds the
target's boundary (a difference of 0, a ratio of 0.7) marks a miss or a hit the test set cannot tell apart. A
30% cut that asks for an ECE below the oracle's own on the same images is marked as such.

Example: python bench/demo_targets.py runs/demo
         python bench/demo_targets.py runs/s0 runs/s1 runs/s2 runs/s3
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from emocaliber.demo_report import PARSE_MODE, eval_rows, stage_rows
from emocaliber.metrics import auroc, ece
from emocaliber.parsing import parse_response
from emocaliber.records import iter_jsonl
from emocaliber.tasks import get_task

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


def _scored(ev: Path) -> dict[tuple[str, int], tuple[str, float, float]]:
    """(record id, sample) -> (group, confidence, correct) for every response of ``ev`` that states a confidence,
    read with the parser and correctness rule of the evaluation (the demo asks once per image; several samples of
    an image would be resampled one by one)."""
    out = {}
    for _, row in iter_jsonl(ev / "predictions.jsonl"):
        record = row["record"]
        if row.get("response") is None:
            continue
        parsed = parse_response(row["response"], record["candidates"], mode=PARSE_MODE)
        if parsed.confidence is not None:
            out[(record["id"], row.get("sample", 0))] = (
                get_task(record["task"]).group, parsed.confidence, float(parsed.label == record["ground_truth"]))
    return out


def _differences(c2, y2, c3, y3, idx: np.ndarray) -> tuple[float, float]:
    """Stage 3's AUROC minus stage 2's and stage 3's ECE over stage 2's, both on the images ``idx``."""
    e2 = ece(c2[idx], y2[idx])
    return auroc(c3[idx], y3[idx]) - auroc(c2[idx], y2[idx]), ece(c3[idx], y3[idx]) / e2 if e2 else np.nan


def paired(stage2: Path, stage3: Path, n_resamples: int, seed: int = 0) -> dict[str, dict[str, tuple]]:
    """Per in-distribution group: ``n`` images both stages answered with a confidence, and (point, low, high) of
    stage 3's AUROC minus stage 2's and of stage 3's ECE over stage 2's, resampling the same images for both."""
    a, b = _scored(stage2), _scored(stage3)
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, tuple]] = {}
    for g in GROUPS:
        keys = sorted(k for k in a.keys() & b.keys() if a[k][0] == g)
        if not keys:
            out[g] = {"n": 0, "auroc_diff": (np.nan,) * 3, "ece_ratio": (np.nan,) * 3}
            continue
        c2, y2 = (np.array([a[k][i] for k in keys], dtype=float) for i in (1, 2))
        c3, y3 = (np.array([b[k][i] for k in keys], dtype=float) for i in (1, 2))
        point = _differences(c2, y2, c3, y3, np.arange(len(keys)))
        boot = np.array([_differences(c2, y2, c3, y3, rng.integers(0, len(keys), len(keys)))
                         for _ in range(n_resamples)]).reshape(-1, 2)
        with warnings.catch_warnings():  # a statistic undefined in every resample has no interval (NaN)
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0) if len(boot) else np.full((2, 2), np.nan)
        out[g] = {"n": len(keys), "auroc_diff": (point[0], lo[0], hi[0]), "ece_ratio": (point[1], lo[1], hi[1])}
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
            for g, d in paired(stage2_dir, stage3_dir, args.paired).items():
                (da, la, ha), (r, lr, hr) = (np.array(d[k], dtype=float) for k in ("auroc_diff", "ece_ratio"))
                print(f"  paired on {d['n']} {g} images (95% of {args.paired} resamples): stage 3 - stage 2 AUROC "
                      f"{100 * da:+.2f} [{100 * la:+.2f}, {100 * ha:+.2f}], ECE x{r:.2f} [{lr:.2f}, {hr:.2f}]")
        total += misses
    print(f"stage-3 misses over {len(args.runs)} runs: {total}")


if __name__ == "__main__":
    main()
