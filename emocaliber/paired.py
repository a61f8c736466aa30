"""One model against another on the same images: paired differences with percentile bootstrap intervals, and
the words that say what each interval says.

Why paired: two evaluations of one test set share most of each image's difficulty, so the interval of a
difference computed on the same resampled images is much narrower than either evaluation's own interval. A
difference is called significant only when its 95% interval excludes the null (a ratio of 1, a difference of 0);
otherwise it is "no significant change", whatever the point estimate.

Statistics, each "after" against "before" (for the demo: stage 3 against stage 2): the ECE ratio (after / before,
10 canonical bins), the Brier-score difference and the failure-prediction AUROC difference (after - before).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber.metrics import auroc, brier, ece
from emocaliber.parsing import parse_response
from emocaliber.records import iter_jsonl
from emocaliber.tasks import get_task

#: name -> (null value, +1 if a larger value is worse, -1 if a smaller value is worse)
STATISTICS: dict[str, tuple[float, int]] = {"ece_ratio": (1.0, +1), "brier_diff": (0.0, +1),
                                            "auroc_diff": (0.0, -1)}
BETTER, WORSE, NO_CHANGE, NOT_MEASURED = ("significantly better", "significantly worse", "no significant change",
                                          "not measured")


def scored(predictions: str | Path, parse_mode: str = "strict") -> dict[tuple[str, int], tuple[str, float, float]]:
    """(record id, sample) -> (group, confidence, correct) for every response of a predictions file that states a
    confidence, read with the evaluation's parser and correctness rule."""
    out = {}
    for _, row in iter_jsonl(predictions):
        record = row["record"]
        if row.get("response") is None:
            continue
        parsed = parse_response(row["response"], record["candidates"], mode=parse_mode)
        if parsed.confidence is not None:
            out[(record["id"], row.get("sample", 0))] = (
                get_task(record["task"]).group, parsed.confidence, float(parsed.label == record["ground_truth"]))
    return out


def _statistics(c0: np.ndarray, y0: np.ndarray, c1: np.ndarray, y1: np.ndarray) -> list[float]:
    """ECE ratio, Brier difference and AUROC difference of "after" (c1, y1) against "before" (c0, y0)."""
    e0 = ece(c0, y0)
    return [ece(c1, y1) / e0 if e0 else math.nan, brier(c1, y1) - brier(c0, y0), auroc(c1, y1) - auroc(c0, y0)]


def verdict(name: str, low: float | None, high: float | None) -> str:
    """What an interval of statistic ``name`` says: better or worse only when it excludes the null."""
    return interval_verdict(low, high, *STATISTICS[name])


def interval_verdict(low: float | None, high: float | None, null: float, worse_sign: int) -> str:
    """What an interval of any paired statistic says, given its null and whether a larger value is worse
    (``worse_sign`` +1) or better (-1): better or worse only when it excludes the null."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return NOT_MEASURED
    if low > null:
        return WORSE if worse_sign > 0 else BETTER
    if high < null:
        return BETTER if worse_sign > 0 else WORSE
    return NO_CHANGE


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def compare(before: dict[tuple[str, int], tuple[str, float, float]],
            after: dict[tuple[str, int], tuple[str, float, float]], n_resamples: int = 1000, seed: int = 0,
            groups: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per group: ``{"n": images both answered with a confidence, statistic: {"point", "low", "high",
    "verdict"}}``; the same resampled images for both models. A statistic undefined on the images (e.g. every
    answer right: no AUROC) has None and "not measured"."""
    shared = before.keys() & after.keys()
    if groups is None:
        groups = sorted({before[k][0] for k in shared})
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for g in groups:
        keys = sorted(k for k in shared if before[k][0] == g)
        c0, y0 = (np.array([before[k][i] for k in keys], dtype=float) for i in (1, 2))
        c1, y1 = (np.array([after[k][i] for k in keys], dtype=float) for i in (1, 2))
        point = _statistics(c0, y0, c1, y1) if keys else [math.nan] * len(STATISTICS)
        boot = np.array([_statistics(c0[i], y0[i], c1[i], y1[i])
                         for i in (rng.integers(0, len(keys), len(keys)) for _ in range(n_resamples if keys else 0))
                         ]).reshape(-1, len(STATISTICS))
        with warnings.catch_warnings():  # a statistic undefined in every resample has no interval (NaN)
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = (np.nanpercentile(boot, [2.5, 97.5], axis=0) if len(boot)
                      else np.full((2, len(STATISTICS)), np.nan))
        entry: dict[str, Any] = {"n": len(keys)}
        for j, name in enumerate(STATISTICS):
            low, high = _finite(lo[j]), _finite(hi[j])
            entry[name] = {"point": _finite(point[j]), "low": low, "high": high, "verdict": verdict(name, low, high)}
        out[g] = entry
    return out


def compare_predictions(before: str | Path, after: str | Path, n_resamples: int = 1000, seed: int = 0,
                        groups: Iterable[str] | None = None, parse_mode: str = "strict") -> dict[str, dict[str, Any]]:
    """:func:`compare` of two predictions files (``eval`` output) of the same test set."""
    return compare(scored(before, parse_mode), scored(after, parse_mode), n_resamples, seed, groups)


def _x100(x: float | None, signed: bool) -> str:
    return "–" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def describe(name: str, stat: dict[str, Any]) -> str:
    """One statistic as text, e.g. ``x0.84 [0.71, 1.10]`` or ``+7.45 [+5.25, +9.76]`` (x100 for Brier and
    AUROC)."""
    if name == "ece_ratio":
        p, lo, hi = (("–" if v is None else f"{v:.2f}") for v in (stat["point"], stat["low"], stat["high"]))
        return f"x{p} [{lo}, {hi}]"
    return f"{_x100(stat['point'], True)} [{_x100(stat['low'], True)}, {_x100(stat['high'], True)}]"


def _join(words: list[str], last: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def summary(group: str, entry: dict[str, Any], before: str = "stage 2", after: str = "stage 3") -> str:
    """A sentence per group that says what the intervals say, e.g. "Synth VER: stage 3 is significantly better
    than stage 2 in ECE and Brier score; no significant change in AUROC." """
    if entry["n"] == 0:
        return f"{group}: not measured (no image where both {before} and {after} stated a confidence)."
    labels = {"ece_ratio": "ECE", "brier_diff": "Brier score", "auroc_diff": "AUROC"}
    by = {v: [labels[n] for n in STATISTICS if entry[n]["verdict"] == v] for v in (BETTER, WORSE, NO_CHANGE,
                                                                                   NOT_MEASURED)}
    moved = [f"{v} than {before} in {_join(by[v])}" for v in (BETTER, WORSE) if by[v]]
    clauses = [f"{after} is {' and '.join(moved)}"] if moved else []
    if by[NO_CHANGE]:
        clauses.append(f"no significant change{'' if moved else f' from {before}'} in {_join(by[NO_CHANGE], 'or')}")
    if by[NOT_MEASURED]:
        clauses.append(f"{_join(by[NOT_MEASURED])} not measured")
    return f"{group}: {'; '.join(clauses)}."


def markdown(comparison: dict[str, dict[str, Any]], n_resamples: int, before: str = "stage 2",
             after: str = "stage 3") -> list[str]:
    """A table of the paired statistics with their verdicts, then one sentence per group."""
    lines = [(f"| group | images | ECE ratio {after}/{before} | Brier {after} - {before} (x100) | "
             f"AUROC {after} - {before} (x100) |"), "|---|---|---|---|---|"]
    for group, entry in comparison.items():
        cells = [f"{describe(n, entry[n])} {entry[n]['verdict']}" for n in STATISTICS]
        lines.append(f"| {group} | {entry['n']} | " + " | ".join(cells) + " |")
    lines += ["", (f"95% percentile intervals over {n_resamples} resamples of the images both answered with a "
                  "confidence; a change is significant only when its interval excludes 1 (ratio) or 0 "
                  "(difference)."), ""]
    return lines + [f"- {summary(g, e, before, after)}" for g, e in comparison.items()]


def main(argv: list[str] | None = None) -> int:
    """``emocaliber compare``: two evaluations of the same test set (``emocaliber eval`` output directories or
    their ``predictions.jsonl``), the second against the first, per group; prints the table and sentences and
    writes them as JSON with ``--out``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="emocaliber compare", description=__doc__.split("\n\n")[0] + ".",
        epilog="example: emocaliber compare runs/demo/eval/stage2 runs/demo/eval/stage3 --before-name 'stage 2' "
               "--after-name 'stage 3'")
    parser.add_argument("before", help="an evaluation directory (or its predictions.jsonl): the reference")
    parser.add_argument("after", help="an evaluation of the same test set: the model compared")
    parser.add_argument("--before-name", default="before")
    parser.add_argument("--after-name", default="after")
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parse-mode", default="strict", choices=("strict", "release"))
    parser.add_argument("--out", help="write the comparison here as JSON")
    args = parser.parse_args(argv)
    if args.n_resamples < 1:
        parser.error(f"--n-resamples must be >= 1, got {args.n_resamples}")
    files = []
    for name in ("before", "after"):
        path = Path(getattr(args, name))
        path = path / "predictions.jsonl" if path.is_dir() else path
        if not path.is_file():
            parser.error(f"{name} {getattr(args, name)}: no predictions.jsonl there (an `emocaliber eval` --out)")
        files.append(path)
    comparison = compare_predictions(*files, args.n_resamples, args.seed, parse_mode=args.parse_mode)
    if not any(entry["n"] for entry in comparison.values()):
        parser.exit(1, f"error: {files[0]} and {files[1]} share no image answered with a confidence in both; "
                       "are they evaluations of the same test set?\n")
    print("\n".join(markdown(comparison, args.n_resamples, args.before_name, args.after_name)))
    if args.out:
        Path(args.out).write_text(json.dumps({"before": str(files[0]), "after": str(files[1]),
                                              "n_resamples": args.n_resamples, "groups": comparison},
                                             indent=1) + "\n")
    return 0
