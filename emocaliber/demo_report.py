"""The demo's stage table: one row per checkpoint (base, stage 1-3) plus the oracle, per SynthEmo group.

It reads what ``eval/run_vecbench.py`` wrote for each stage (metrics.json, predictions.jsonl) and lays the numbers
out the way the paper's stage table does, next to the oracle that answers each image's most likely label with its
true probability of being right: the best calibration and failure prediction any model could reach. Then stage 3's
checkpoint selection (which validated step it hands on, and every candidate's validation scores, from its
``emocaliber_training.json``) and stage 3 against stage 2 on the same test images as paired differences with 95%
bootstrap intervals (:mod:`emocaliber.paired`), in words that say only what the intervals say.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from emocaliber import paired
from emocaliber.parsing import parse_response
from emocaliber.records import REASONING_PARTS, iter_jsonl
from emocaliber.report import load_rows, parse_rows, plot_reliability
from emocaliber.tasks import get_task

STAGES = ("base", "stage1", "stage2", "stage3")
KEYS = ("accuracy", "ece", "brier", "auroc", "parse_rate")
PARSE_MODE = "strict"


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _parse_rates(predictions: Path, with_confidence: bool) -> dict[str, float]:
    """Per group: responses with all five reasoning parts and a label (and a confidence when one was asked)."""
    ok: dict[str, list[int]] = {}
    for _, row in iter_jsonl(predictions):
        record = row["record"]
        group = get_task(record["task"]).group
        valid = False
        if row.get("response") is not None:
            p = parse_response(row["response"], record["candidates"], mode=PARSE_MODE)
            valid = (p.label is not None and all(k in p.reasoning for k in REASONING_PARTS)
                     and (p.confidence is not None or not with_confidence))
        ok.setdefault(group, []).append(int(valid))
    return {g: sum(v) / len(v) for g, v in ok.items()}


def _row(m: dict[str, Any], with_confidence: bool, parse_rate: float) -> dict[str, float | None]:
    """One table cell set from a group's ``paper`` metrics (the confidence columns only where one was asked)."""
    return {"accuracy": _num(m["accuracy"]), "ece": _num(m["ece_10"]) if with_confidence else None,
            "brier": _num(m["brier"]) if with_confidence else None,
            "auroc": _num(m["auroc"]) if with_confidence else None, "parse_rate": parse_rate}


def eval_rows(ev: Path, with_confidence: bool) -> tuple[dict[str, dict[str, float | None]], dict | None]:
    """One evaluation directory's ``{group: {accuracy, ece, brier, auroc, parse_rate}}`` and its oracle block."""
    path = ev / "metrics.json"
    try:
        metrics = json.loads(path.read_text())["modes"][PARSE_MODE]
        groups = {group: block["paper"]["metrics"] for group, block in metrics["groups"].items()}
    except (ValueError, KeyError, TypeError) as e:  # cut short, or written by another eval/run_vecbench.py
        raise ValueError(f"{path}: not an evaluation's metrics ({e!r}); rerun that evaluation") from None
    rates = _parse_rates(ev / "predictions.jsonl", with_confidence)
    rows = {group: _row(m, with_confidence, rates.get(group, 0.0)) for group, m in groups.items()}
    return rows, metrics.get("oracle")


def stage_rows(run_dir: Path) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{stage: {group: {accuracy, ece, brier, auroc, parse_rate}}}`` for the four stages and the oracle."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    oracle = None
    for stage in STAGES:
        table[stage], found = eval_rows(run_dir / "eval" / stage, stage not in ("base", "stage1"))
        oracle = oracle or found
    if oracle is not None:
        table["oracle"] = {g: _row(b["paper"]["metrics"], True, 1.0) for g, b in oracle["groups"].items()}
    return table


def _curves(run_dir: Path) -> dict[str, dict[str, tuple[list, list]]]:
    """Per group: (confidences, correct) of stage 2, stage 3 and the oracle, for the reliability diagrams."""
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for stage in ("stage2", "stage3"):
        rows, _, _ = load_rows(run_dir / "eval" / stage / "predictions.jsonl")
        parsed = parse_rows(rows, PARSE_MODE)
        for task, pred, truth, conf in zip(parsed.tasks, parsed.predictions, parsed.truths, parsed.confidences):
            c, y = out.setdefault(get_task(task).group, {}).setdefault(stage, ([], []))
            c.append(conf)
            y.append(int(pred == truth))
        if stage == "stage3":
            for task, truth, label, conf in parsed.oracle.values():
                c, y = out.setdefault(get_task(task).group, {}).setdefault("oracle", ([], []))
                c.append(conf)
                y.append(int(label == truth))
    return out


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown_table(table: dict[str, dict[str, dict[str, float | None]]]) -> str:
    groups = [g for g in table["stage3"]]
    head = "| model | " + " | ".join(f"{g} {k}" for g in groups for k in ("Acc", "ECE", "Brier", "AUROC", "Parse"))
    lines = [head + " |", "|---" * (1 + 5 * len(groups)) + "|"]
    for stage, per_group in table.items():
        cells = [_fmt(per_group.get(g, {}).get(k)) for g in groups for k in KEYS]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage3_selection(run_dir: Path) -> dict[str, Any] | None:
    """The ``selection`` record of stage 3's ``emocaliber_training.json``: the validated step it hands on, why,
    and every candidate's validation scores; None when stage 3 ran without a validation file."""
    path = run_dir / "stage3" / "emocaliber_training.json"
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not readable JSON ({e}); rerun stage 3") from None
    return info.get("selection")


def selection_lines(selection: dict[str, Any] | None) -> list[str]:
    """report.md's section on the checkpoint stage 3 hands on."""
    if selection is None:
        return ["## Checkpoint selection", "", "Stage 3 ran without a validation file: its last step is evaluated.",
                ""]
    if "candidates" not in selection:  # select_metric: none
        return ["## Checkpoint selection", "", f"Step {selection['selected_step']}: {selection['reason']}.", ""]
    from emocaliber.train.validation import selection_markdown

    return selection_markdown(selection)


def paired_lines(comparison: dict[str, dict[str, Any]], n_resamples: int) -> list[str]:
    """report.md's section comparing stage 3 with stage 2 on the same test images."""
    return ["## Stage 3 against stage 2 on the same test images", "", *paired.markdown(comparison, n_resamples), ""]


BLEND_ROWS = (("violation rate", "violation_rate"), ("mean gap", "mean_gap"), ("blend ECE", "blend_ece"),
              ("blend Brier", "blend_brier"), ("names a source", "blend_names_a_source"))


def blend_rank_summary(run_dir: Path, n_paired: int, seed: int) -> dict[str, Any]:
    """``eval-blends`` of stages 2 and 3 (``--blend-rank``): each one's metrics and stage 3 minus stage 2 on the
    same triplets (paired bootstrap)."""
    from emocaliber.blend_rank import collect_triplets, paired_differences

    out: dict[str, Any] = {}
    for stage in ("stage2", "stage3"):
        path = run_dir / "eval" / f"blends-{stage}" / "metrics.json"
        try:
            out[stage] = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not readable JSON ({e}); rerun that blend evaluation") from None
    triplets = {stage: collect_triplets(run_dir / "eval" / f"blends-{stage}" / "eval" / "predictions.jsonl")
                for stage in ("stage2", "stage3")}
    out["stage3_vs_stage2"] = paired_differences(triplets["stage3"], triplets["stage2"], out["stage3"]["delta"],
                                                 n_paired, seed)
    return out


def blend_rank_lines(summary: dict[str, Any]) -> list[str]:
    """report.md's Rank-O-ToM section: the blend-rank metrics of stages 2 and 3 and their paired difference."""
    from emocaliber.blend_rank import paired_readings, with_interval

    def cell(metrics: dict[str, Any], name: str) -> str:
        return with_interval(metrics, name, missing="–")

    s2, s3, diff = summary["stage2"], summary["stage3"], summary["stage3_vs_stage2"]
    lines = ["## Blend ranking (Rank-O-ToM)", "",
             (f"{s3['n_triplets']} held-out triplets from the test set (two images with different labels and their "
              f"CutMix blend); a violation is a blend stated at least min(c_a, c_b) - {s3['delta']}. Values with "
              "95% bootstrap intervals over triplets."), "",
             "| metric | stage 2 | stage 3 |", "|---|---|---|"]
    lines += [f"| {label} | {cell(s2, name)} | {cell(s3, name)} |" for label, name in BLEND_ROWS]
    if "top_two" in s3:
        lines.append(f"| both-sources recall (top two) | {cell(s2.get('top_two', {}), 'both_sources_recall')} | "
                     f"{cell(s3['top_two'], 'both_sources_recall')} |")
    lines += ["", f"Stage 3 minus stage 2 on the same {diff['n_paired']} triplets (paired bootstrap):", ""]
    lines += [f"- {label}: {text}, {reading}" if text else f"- {label}: {reading}"
              for label, text, reading in paired_readings(diff)]
    return [*lines, ""]


def write_demo_report(run_dir: str | Path, *, settings: dict[str, Any], elapsed: str, n_paired: int = 1000,
                      seed: int = 0, blend_rank: bool = False) -> dict[str, Any]:
    """Write stages.json, report.md and the reliability diagrams under ``run_dir``; print and return the table.

    stages.json holds the table (``{stage: {group: metrics}}`` for base, stage 1-3 and the oracle) and two more
    keys: ``stage3_selection`` (the checkpoint stage 3 hands on and the candidates' validation scores) and
    ``stage3_vs_stage2`` (per group: the images compared, then the ECE ratio, the Brier and the AUROC
    difference, each with its point, 95% interval and verdict); with ``blend_rank``, ``blend_rank`` too (the
    blend-rank evaluation of stages 2 and 3 and their paired difference)."""
    run_dir = Path(run_dir)
    table = stage_rows(run_dir)
    selection = stage3_selection(run_dir)
    comparison = paired.compare_predictions(run_dir / "eval" / "stage2" / "predictions.jsonl",
                                            run_dir / "eval" / "stage3" / "predictions.jsonl", n_paired, seed,
                                            groups=list(table["stage3"]), parse_mode=PARSE_MODE)
    stages = {**table, "stage3_selection": selection,
              "stage3_vs_stage2": {"n_resamples": n_paired, "groups": comparison}}
    blend_summary = blend_rank_summary(run_dir, n_paired, seed) if blend_rank else None
    if blend_summary is not None:
        stages["blend_rank"] = blend_summary
    (run_dir / "stages.json").write_text(json.dumps(stages, indent=1, sort_keys=True) + "\n")
    plots = []
    for group, curves in _curves(run_dir).items():
        name = "reliability_" + group.lower().replace(" ", "_") + ".png"
        plot_reliability({k: curves[k] for k in ("stage2", "stage3", "oracle") if k in curves}, run_dir / name,
                         title=f"{group}: stage 2 vs stage 3 vs oracle")
        plots.append(name)
    artefacts = ["data/ (SynthEmo records and images)", "cot/ (stage-1/2/3 pools)",
                 "holdout/ (stage 3's training prompts and validation prompts, split by image)",
                 "base/ stage1/ stage2/ stage3/ (checkpoints; stage3/validation.jsonl: every validation pass)", "targets/stage2.jsonl (confidence targets)",
                 "eval/<stage>/ (predictions, metrics, per-stage report and plots)", "stages.json", *plots]
    if blend_summary:
        artefacts[5:5] = ["blends/ (stage 3's blends of its training images)",
                          "blend-table/ (stage 2 on stage 3's clean images: the ranking reward's starting table)",
                          "eval/blends-<stage>/ (blend-rank evaluation: triplets, predictions, metrics, report)"]
    intro = ("Per group: accuracy (Acc), ECE (10 canonical bins), Brier, failure-prediction AUROC and parse rate, "
             "x100. Base and stage 1 are asked without the confidence instruction (as in the paper's table, they "
             "state no confidence). The oracle answers each image's most likely label with its true probability "
             "of being right.")
    md = ["# EmoCaliber demo on SynthEmo", "", intro, "", markdown_table(table), "",
          *paired_lines(comparison, n_paired), *selection_lines(selection),
          *(blend_rank_lines(blend_summary) if blend_summary else []),
          f"Wall time: {elapsed}. Settings: `{json.dumps(settings)}`", "",
          "## Artefacts", "", *[f"- `{a}`" for a in artefacts], "", *[f"![{p}]({p})" for p in plots]]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")
    print("\n" + markdown_table(table) + "\n")
    print("\n".join(paired_lines(comparison, n_paired)))
    if blend_summary:
        print("\n".join(blend_rank_lines(blend_summary)))
    if selection is not None:
        print(f"stage 3: step {selection['selected_step']} selected: {selection['reason']}")
    print(f"report: {run_dir / 'report.md'}; table: {run_dir / 'stages.json'}; plots: "
          + ", ".join(str(run_dir / p) for p in plots))
    return table
