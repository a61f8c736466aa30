"""Blend-rank evaluation: does the model state less confidence on a blend than on each of its two sources?

From any labelled test file it builds held-out triplets (two clean images of one task with different labels and
their CutMix blend, :mod:`emocaliber.blends`), evaluates the checkpoint on all of them with the ordinary
evaluation runner (so the run is resumable and its predictions are the same ``predictions.jsonl``), and reports:

* violation rate ``P[c_blend >= min(c_a, c_b) - delta]``: how often the blend is not at least ``delta`` less
  sure than its less-sure source (0 is Rank-O-ToM's ideal; 1 means blends always get as much confidence);
* mean gap ``min(c_a, c_b) - c_blend`` (positive is the right order);
* ECE and Brier score of the blends against their soft targets (the named source's share,
  :func:`emocaliber.blends.blend_target`), and the share of blend answers naming either source;

each with a percentile bootstrap interval over triplets. A triplet whose blend or a source has no stated
confidence is left out and counted (``n_incomplete``). With ``--top-two`` a second pass asks each blend for its
two most likely labels (no confidence) and reports both-sources recall: how often those two are the blend's two
sources, Rank-O-ToM's test of whether a model sees both emotions in a blend rather than one.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber.blends import AXES, BlendSettings, blend_info, blend_target, write_blends
from emocaliber.parsing import named_labels, parse_response
from emocaliber.records import Record, iter_jsonl, read_records, resolve_image, write_records

DELTA = 0.1


def violation_rate(c_blend: Any, c_a: Any, c_b: Any, delta: float = DELTA) -> float:
    """Share of triplets whose blend is not ``delta`` below its less-sure source."""
    c_blend, low = np.asarray(c_blend, float), np.minimum(np.asarray(c_a, float), np.asarray(c_b, float))
    return float(np.mean(c_blend >= low - delta)) if c_blend.size else math.nan


def mean_gap(c_blend: Any, c_a: Any, c_b: Any) -> float:
    """Mean of ``min(c_a, c_b) - c_blend`` (positive: blends are less sure than their sources)."""
    c_blend, low = np.asarray(c_blend, float), np.minimum(np.asarray(c_a, float), np.asarray(c_b, float))
    return float(np.mean(low - c_blend)) if c_blend.size else math.nan


def soft_ece(confidences: Any, targets: Any, n_bins: int = 10) -> float:
    """ECE against soft targets: equal-width bins of confidence (the last bin closed), ``|mean c - mean t|``
    weighted by bin size."""
    c, t = np.asarray(confidences, float), np.asarray(targets, float)
    if not c.size:
        return math.nan
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(c[m].mean() - t[m].mean())
    return float(total / c.size)


def soft_brier(confidences: Any, targets: Any) -> float:
    c, t = np.asarray(confidences, float), np.asarray(targets, float)
    return float(np.mean((c - t) ** 2)) if c.size else math.nan


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, n_bootstrap: int = 1000, seed: int = 0,
                       level: float = 0.95) -> list[float | None]:
    """Percentile interval of ``statistic(indices)`` over ``n_bootstrap`` resamples of ``range(n)``."""
    if n == 0 or n_bootstrap <= 0:
        return [None, None]
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_bootstrap)], dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return [None, None]
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def triplet_metrics(triplets: Sequence[dict[str, Any]], delta: float = DELTA, n_bootstrap: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Metrics over triplets ``{"c_blend", "c_a", "c_b", "target", "named_source"}`` (confidences may be None)."""
    complete = [t for t in triplets if None not in (t["c_blend"], t["c_a"], t["c_b"])]
    cb = np.array([t["c_blend"] for t in complete], float)
    ca = np.array([t["c_a"] for t in complete], float)
    cs = np.array([t["c_b"] for t in complete], float)
    target = np.array([t["target"] for t in complete], float)
    named = np.array([t["named_source"] for t in complete], float)
    stats: dict[str, Callable[[np.ndarray], float]] = {
        "violation_rate": lambda i: violation_rate(cb[i], ca[i], cs[i], delta),
        "mean_gap": lambda i: mean_gap(cb[i], ca[i], cs[i]),
        "blend_ece": lambda i: soft_ece(cb[i], target[i]),
        "blend_brier": lambda i: soft_brier(cb[i], target[i]),
        "blend_names_a_source": lambda i: float(named[i].mean()) if i.size else math.nan,
    }
    everything = np.arange(len(complete))
    out: dict[str, Any] = {"n_triplets": len(triplets), "n_incomplete": len(triplets) - len(complete),
                           "delta": delta, "n_bootstrap": n_bootstrap, "seed": seed}
    for name, fn in stats.items():
        value = fn(everything)
        out[name] = None if not math.isfinite(value) else value
        out[f"{name}_ci"] = bootstrap_interval(fn, len(complete), n_bootstrap, seed)
    return out


def paired_differences(triplets: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]],
                       delta: float = DELTA, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """This model minus a baseline on the same triplets (matched by blend id, complete in both): violation rate
    and mean gap, with a paired percentile bootstrap over triplets (an interval wholly below 0 for the violation
    rate means this model orders blends below their sources significantly more often)."""
    base = {t["id"]: t for t in baseline}
    pairs = [(t, base[t["id"]]) for t in triplets if t["id"] in base
             and None not in (t["c_blend"], t["c_a"], t["c_b"])
             and None not in (base[t["id"]]["c_blend"], base[t["id"]]["c_a"], base[t["id"]]["c_b"])]

    def arrays(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.array([p[k][key] for p in pairs], float) for key in ("c_blend", "c_a", "c_b"))

    (b1, a1, s1), (b0, a0, s0) = arrays(0), arrays(1)
    stats: dict[str, Callable[[np.ndarray], float]] = {
        "violation_rate": lambda i: violation_rate(b1[i], a1[i], s1[i], delta) - violation_rate(b0[i], a0[i], s0[i],
                                                                                                  delta),
        "mean_gap": lambda i: mean_gap(b1[i], a1[i], s1[i]) - mean_gap(b0[i], a0[i], s0[i]),
    }
    out: dict[str, Any] = {"n_paired": len(pairs)}
    for name, fn in stats.items():
        value = fn(np.arange(len(pairs))) if pairs else math.nan
        out[f"{name}_diff"] = None if not math.isfinite(value) else value
        out[f"{name}_diff_ci"] = bootstrap_interval(fn, len(pairs), n_bootstrap, seed)
    return out


def collect_triplets(predictions: str | Path) -> list[dict[str, Any]]:
    """Triplets from an evaluation's ``predictions.jsonl`` of clean sources and their blends (first sample)."""
    stated: dict[str, tuple[str | None, float | None]] = {}
    blends: dict[str, dict[str, Any]] = {}
    for _, row in iter_jsonl(predictions, errors=[]):
        record = row.get("record") or {}
        if row.get("sample", 0) != 0 or not isinstance(record.get("id"), str):
            continue
        parsed = parse_response(row.get("response"), record.get("candidates") or (), "strict")
        ok = parsed.valid_format and parsed.confidence is not None
        stated[record["id"]] = (parsed.label, parsed.confidence if ok else None)
        if blend_info(record):
            blends[record["id"]] = blend_info(record)
    out = []
    for bid, info in blends.items():
        label, c_blend = stated[bid]
        correct, target = blend_target(label, info)
        a, b = (stated.get(s, (None, None))[1] for s in info["sources"])
        out.append({"id": bid, "c_blend": c_blend, "c_a": a, "c_b": b, "target": target,
                    "named_source": bool(correct)})
    return out


def top_two_records(triplet_file: str | Path) -> list[Record]:
    """The blends of a triplet file, each asking for its two most likely labels (``meta["prompt"]``, which the
    evaluation asks verbatim)."""
    from dataclasses import replace

    from emocaliber.prompts import build_top_two_prompt
    from emocaliber.tasks import get_task

    return [replace(r, meta={**r.meta, "prompt": build_top_two_prompt(
                r.candidates, sentiment=get_task(r.task).is_sentiment)})
            for r in read_records(triplet_file) if blend_info(r)]


def top_two_hits(predictions: str | Path) -> list[dict[str, Any]]:
    """Per blend of a top-two pass: the first two labels its answer names and whether they are its two sources
    (an answer naming fewer, or none, is a miss)."""
    out = []
    for _, row in iter_jsonl(predictions, errors=[]):
        record = row.get("record") or {}
        info = blend_info(record)
        if row.get("sample", 0) != 0 or not info:
            continue
        named = named_labels(row.get("response"), record.get("candidates") or ())[:2]
        sources = {str(label).lower() for label in info["labels"]}
        out.append({"id": record.get("id"), "named": named,
                    "both_sources": sources == {label.lower() for label in named}})
    return out


def recall_metrics(hits: Sequence[dict[str, Any]], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Both-sources recall over blends with its percentile bootstrap interval, and how many answers named fewer
    than two candidates."""
    both = np.array([h["both_sources"] for h in hits], float)

    def recall(i: np.ndarray) -> float:
        return float(both[i].mean()) if i.size else math.nan

    value = recall(np.arange(len(hits)))
    return {"n_blends": len(hits), "n_fewer_than_two": sum(len(h["named"]) < 2 for h in hits),
            "both_sources_recall": None if not math.isfinite(value) else value,
            "both_sources_recall_ci": bootstrap_interval(recall, len(hits), n_bootstrap, seed)}


def build_triplet_file(data: str, image_root: str, out: Path, n: int, settings: BlendSettings
                       ) -> tuple[Path, Path, list[str]]:
    """Write ``out/triplets.jsonl`` (the sources of ``n`` blends, then the blends) with every image copied under
    ``out/images``, so one image root serves the evaluation. Returns (file, image root, problems)."""
    errors: list[str] = []
    records = [r for r in read_records(data, errors=errors) if r.split == "test"] or read_records(data)
    images = out / "images"
    blends, problems = write_blends(records, image_root, images, n, settings)
    by_id = {r.id: r for r in records}
    sources: dict[str, Record] = {}
    for blend in blends:
        for sid in blend.meta["blend"]["sources"]:
            sources.setdefault(sid, by_id[sid])
    for record in sources.values():
        target = resolve_image(images, record.image)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolve_image(image_root, record.image), target)
    path = out / "triplets.jsonl"
    write_records(path, [*sources.values(), *blends])
    return path, images, errors + problems


def with_interval(metrics: dict[str, Any], name: str, missing: str = "n/a") -> str:
    """``metrics[name]`` with its bootstrap interval ``metrics[name + "_ci"]``, e.g. ``0.956 [0.929, 0.980]``."""
    value, ci = metrics.get(name), metrics.get(f"{name}_ci") or [None, None]
    if value is None:
        return missing
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else "")


#: The paired differences of :func:`paired_differences`: (label, key, +1 if a larger value is worse, else -1).
PAIRED = (("violation rate", "violation_rate", +1), ("mean gap", "mean_gap", -1))


def paired_readings(paired: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(label, ``+value [low, high]`` or None, what the interval says) for each paired difference; None and "too
    few paired triplets" when there was nothing to compare."""
    from emocaliber.paired import interval_verdict

    out: list[tuple[str, str | None, str]] = []
    for label, name, worse_sign in PAIRED:
        value, (lo, hi) = paired[f"{name}_diff"], paired[f"{name}_diff_ci"]
        if value is None or lo is None:
            out.append((label, None, "too few paired triplets"))
        else:
            out.append((label, f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}]", interval_verdict(lo, hi, 0.0, worse_sign)))
    return out


def report_markdown(metrics: dict[str, Any]) -> str:
    rows = [("violation rate P[c_blend >= min(c_a, c_b) - delta]", "violation_rate"),
            ("mean gap min(c_a, c_b) - c_blend", "mean_gap"),
            ("blend ECE against soft targets", "blend_ece"),
            ("blend Brier against soft targets", "blend_brier"),
            ("blend answer names a source", "blend_names_a_source")]
    lines = ["# Blend-rank evaluation", "",
             (f"{metrics['n_triplets']} triplets (of {metrics.get('n_requested', metrics['n_triplets'])} asked "
              "for; fewer when the file has too few pairs with different labels); "
              f"{metrics['n_incomplete']} left out for a missing confidence; delta {metrics['delta']}; 95% "
              f"percentile bootstrap intervals over triplets ({metrics['n_bootstrap']} resamples, "
              f"seed {metrics['seed']})."), "",
             "| metric | value [95% CI] |", "|---|---|"]
    lines += [f"| {label} | {with_interval(metrics, name)} |" for label, name in rows]
    top_two = metrics.get("top_two")
    if top_two:
        lines += ["", (f"Both-sources recall (asked for its two most likely labels, the share of the "
                       f"{top_two['n_blends']} blends whose two named labels are its two sources; 95% CI): "
                       f"{with_interval(top_two, 'both_sources_recall')}. {top_two['n_fewer_than_two']} answers named fewer than two "
                       "candidates.")]
    paired = metrics.get("paired_vs_baseline")
    if paired:
        lines += ["", (f"Against `{paired['baseline']}` on the same {paired['n_paired']} triplets (this model minus "
                  "the baseline, paired bootstrap):"), "", "| difference | value [95% CI] | reading |", "|---|---|---|"]
        lines += [f"| {label} | {text or 'n/a'} | {reading} |" for label, text, reading in paired_readings(paired)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``emocaliber eval-blends``: the blend-rank evaluation of a checkpoint."""
    parser = argparse.ArgumentParser(
        prog="emocaliber eval-blends",
        description=__doc__.split("\n\n")[0] + " Builds held-out triplets from a labelled test file, evaluates "
                    "them greedily and writes metrics.json and report.md.",
        epilog="example: emocaliber eval-blends --model runs/demo/stage3 --data data/synthemo/test.jsonl "
               "--image-root data/synthemo --out runs/blends --n-triplets 300")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="labelled records (its test split is used when present)")
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-triplets", type=int, default=300)
    parser.add_argument("--delta", type=float, default=DELTA)
    parser.add_argument("--axis", default="horizontal", choices=(*AXES, "random"))
    parser.add_argument("--lam-min", type=float, default=0.5)
    parser.add_argument("--lam-max", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backend", default="auto", choices=("auto", "transformers", "vllm"))
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--top-two", action="store_true",
                        help="a second pass asking each blend for its two most likely labels: both-sources recall")
    parser.add_argument("--baseline", default=None,
                        help="another eval-blends --out directory built with the same data, --seed and blend "
                             "settings: report this model minus that one, paired over the same triplets")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from emocaliber.evaluation import EvalConfig, EvalError, run_evaluation

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        settings = BlendSettings(args.axis, args.lam_min, args.lam_max, args.seed)
        path, images, problems = build_triplet_file(args.data, args.image_root, out, args.n_triplets, settings)
        config = EvalConfig(model=args.model, data=str(path), out=str(out / "eval"), image_root=str(images),
                            backend=args.backend, temperature=0.0, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, seed=args.seed, parse_mode="strict",
                            n_bootstrap=min(args.n_bootstrap, 200), progress=not args.no_progress)
        result = run_evaluation(config)
        if args.top_two:
            top_two_file = out / "top_two.jsonl"
            write_records(top_two_file, top_two_records(path))
            top_two_config = replace(config, data=str(top_two_file), out=str(out / "top_two"),
                                     with_confidence=False)
            run_evaluation(top_two_config)
    except (ValueError, OSError, EvalError) as e:
        parser.exit(1, f"error: {e}\n")
    triplets = collect_triplets(Path(config.out) / "predictions.jsonl")
    metrics = triplet_metrics(triplets, args.delta, args.n_bootstrap, args.seed)
    if args.top_two:
        metrics["top_two"] = recall_metrics(top_two_hits(out / "top_two" / "predictions.jsonl"), args.n_bootstrap,
                                            args.seed)
    if args.baseline:
        baseline = Path(args.baseline) / "eval" / "predictions.jsonl"
        if not baseline.is_file():
            parser.exit(1, f"error: --baseline {args.baseline}: no eval/predictions.jsonl there (run eval-blends "
                           "into it first)\n")
        metrics["paired_vs_baseline"] = {"baseline": str(args.baseline), **paired_differences(
            triplets, collect_triplets(baseline), args.delta, args.n_bootstrap, args.seed)}
    metrics["n_requested"] = args.n_triplets
    metrics["skipped_inputs"] = problems
    metrics["clean_metrics"] = str(result.out_dir / "metrics.json")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(metrics))
    print(report_markdown(metrics))
    return 0
