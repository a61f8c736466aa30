"""The evaluation report: predictions rows in; metrics.json, report.md and PNG plots out.

Parsing happens here, not at generation time, so one predictions file yields both the project's strict rules and
the released evaluation's rules. Nothing is silently dropped: a row with ``error`` set (e.g. an image that failed
to load) or a response without a parsable label counts as wrong in every accuracy denominator; a response
without a parsable confidence is counted (``n_missing_confidence``) and left out of calibration metrics only; a
row that is not a valid predictions row at all is skipped and listed. With K samples per record every sample is
scored as an item (the metrics describe one sampled answer) and the bootstrap resamples records, not samples.

Plots use matplotlib's object API on the Agg canvas, so importing this module never changes the pyplot backend.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emocaliber import metrics as M
from emocaliber.atomic import write_text_atomic
from emocaliber.parsing import MODES as PARSE_MODES
from emocaliber.parsing import parse_response
from emocaliber.records import Record, RecordError, iter_jsonl
from emocaliber.tasks import GROUPS, get_task

_TOP_REASONS = 20


# --------------------------------------------------------------------------------------------- parsing rows
@dataclass
class ParsedRows:
    """One entry per scored (record, sample) row, plus what was counted along the way."""

    tasks: list[str] = field(default_factory=list)
    predictions: list[str | None] = field(default_factory=list)
    truths: list[str] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    errors: list[bool] = field(default_factory=list)
    valid_format: list[bool] = field(default_factory=list)
    error_reasons: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    oracle: dict[str, tuple[str, str, str, float]] = field(default_factory=dict)  # id -> task, truth, label, conf


#: The ``record '<id>': `` that per-item error messages start with (the id quoted as Python's repr quotes it).
_RECORD_PREFIX = re.compile(r"^record (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"): ")


def _reason(text: str) -> str:
    """A countable reason: the kind of error, i.e. the text before the first colon once the ``record '<id>':``
    prefix is gone (kept, every item would be its own reason; paths and values come after the kind), with
    quoted values removed as for parser problems, at most 80 characters."""
    kind = _RECORD_PREFIX.sub("", str(text)).split(":", 1)[0]
    return _problem_kind(kind).strip()[:80] or "error"


def _problem_kind(problem: str) -> str:
    """A parser problem with its quoted value removed, so equal problems count together."""
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "…", problem)


def parse_rows(rows: Iterable[Any], parse_mode: str = "strict") -> ParsedRows:
    """Validate and parse predictions rows ``{"record", "sample", "response", "error"}``.

    A row that is not a JSON object, lacks a valid record, has a bad sample index or repeats a (record id,
    sample) pair already seen is skipped and listed in ``skipped`` with its position and the reason.
    """
    if parse_mode not in PARSE_MODES:
        raise ValueError(f"unknown parse mode {parse_mode!r}; use one of {PARSE_MODES}")
    out = ParsedRows()
    seen: set[tuple[str, int]] = set()
    for pos, row in enumerate(rows):
        where = f"row {pos}"
        if isinstance(row, tuple):  # (line number, object) from iter_jsonl
            where, row = f"line {row[0]}", row[1]
        try:
            record, sample = _check_row(row)
        except (RecordError, TypeError, ValueError) as e:
            out.skipped.append(f"{where}: {e}")
            continue
        if (record.id, sample) in seen:
            out.skipped.append(f"{where}: duplicate of record {record.id!r} sample {sample}; the first one is scored")
            continue
        seen.add((record.id, sample))
        error = row.get("error")
        response = row.get("response")
        if error is None and response is None:
            error = "no response and no error given"
        if error is not None:
            out.error_reasons[_reason(error)] += 1
            label, conf, valid = None, None, False
        else:
            parsed = parse_response(response, record.candidates, parse_mode)
            label, conf, valid = parsed.label, parsed.confidence, parsed.valid_format
            out.problems.update(_problem_kind(p) for p in parsed.problems)
        out.tasks.append(record.task)
        out.predictions.append(label)
        out.truths.append(record.ground_truth)
        out.confidences.append(conf)
        out.record_ids.append(record.id)
        out.samples.append(sample)
        out.errors.append(error is not None)
        out.valid_format.append(bool(valid))
        oracle_label, oracle_conf = record.meta.get("oracle_label"), record.meta.get("oracle_confidence")
        if oracle_label is not None and isinstance(oracle_conf, (int, float)) and 0 <= oracle_conf <= 1:
            out.oracle[record.id] = (record.task, record.ground_truth, str(oracle_label), float(oracle_conf))
    return out


def _check_row(row: Any) -> tuple[Record, int]:
    if not isinstance(row, dict):
        raise TypeError(f"a predictions row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("record", "response", "error") if k not in row]
    if missing:
        raise ValueError(f"missing field(s) {missing}; a row is {{record, sample, response, error}}")
    record = Record.from_dict(row["record"])
    sample = row.get("sample", 0)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ValueError(f"'sample' must be a non-negative integer, got {sample!r}")
    if row["error"] is not None and not isinstance(row["error"], str):
        raise ValueError(f"'error' must be null or a string, got {type(row['error']).__name__}")
    return record, sample


def load_rows(rows_or_path: str | os.PathLike | Iterable[Any]) -> tuple[list[Any], str | None, list[str]]:
    """(rows, source path or None, unreadable lines). Bad JSON lines are listed, not fatal."""
    if isinstance(rows_or_path, (str, os.PathLike)):
        bad: list[str] = []
        return list(iter_jsonl(rows_or_path, errors=bad)), str(rows_or_path), bad
    return list(rows_or_path), None, []


# ------------------------------------------------------------------------------------------------- metrics
def _rate(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def _parse_stats(p: ParsedRows, mask: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(mask)
    labels = [p.predictions[i] is not None for i in idx]
    confs = [p.confidences[i] is not None for i in idx]
    return {"n_rows": len(idx), "n_error_rows": int(sum(p.errors[i] for i in idx)),
            "n_missing_confidence": int(len(idx) - sum(confs)), "label_parse_rate": _rate(labels),
            "confidence_parse_rate": _rate(confs), "format_rate": _rate([p.valid_format[i] for i in idx])}


def _per_sample(p: ParsedRows) -> dict[str, Any] | None:
    """Accuracy and ECE of each sample index over all tasks: the spread that one-sample evaluation hides."""
    ks = sorted(set(p.samples))
    if len(ks) < 2:
        return None
    samples = np.array(p.samples)
    correct = np.array([a is not None and a == t for a, t in zip(p.predictions, p.truths)])
    has = np.array([c is not None for c in p.confidences])
    conf = np.array([np.nan if c is None else c for c in p.confidences])
    acc, ece = [], []
    for k in ks:
        m = samples == k
        acc.append(float(correct[m].mean()))
        ece.append(M.ece(conf[m & has], correct[m & has]) if (m & has).any() else None)
    finite = [e for e in ece if e is not None]
    return {"sample": ks, "accuracy": acc, "ece_10": ece, "accuracy_std": float(np.std(acc, ddof=1)),
            "ece_10_std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None}


def _top(counter: Counter) -> dict[str, int]:
    return dict(counter.most_common(_TOP_REASONS))


def _evaluate_parsed(p: ParsedRows, parse_mode: str, n_bootstrap: int, seed: int) -> dict[str, Any]:
    if not p.tasks:
        raise ValueError("no scorable predictions rows" + (f"; first problem: {p.skipped[0]}" if p.skipped else ""))
    out = M.evaluate_items(p.tasks, p.predictions, p.truths, p.confidences, clusters=p.record_ids,
                           n_bootstrap=n_bootstrap, seed=seed)
    tasks = np.array(p.tasks)
    for t, block in out["tasks"].items():
        block["parse"] = _parse_stats(p, tasks == t)
    for block in out["groups"].values():
        block["parse"] = _parse_stats(p, np.isin(tasks, block["tasks"]))
    out["overall"]["parse"] = _parse_stats(p, np.ones(len(tasks), dtype=bool))
    counts = Counter(Counter(p.record_ids).values())
    result: dict[str, Any] = {
        "parse_mode": parse_mode, "n_rows": len(p.tasks), "n_records": len(set(p.record_ids)),
        "samples_per_record": {str(k): v for k, v in sorted(counts.items())},
        "skipped_rows": {"n": len(p.skipped), "first": p.skipped[:10]},
        "error_reasons": _top(p.error_reasons), "parse_problems": _top(p.problems), **out,
    }
    per_sample = _per_sample(p)
    if per_sample is not None:
        result["per_sample"] = per_sample
    if p.oracle:
        ids = sorted(p.oracle)
        task, truth, label, conf = zip(*(p.oracle[i] for i in ids))
        oracle = M.evaluate_items(task, label, truth, conf, n_bootstrap=n_bootstrap, seed=seed)
        result["oracle"] = {"n_records": len(ids), "note": "meta.oracle_label answered with meta.oracle_confidence, "
                            "one item per record", **oracle}
    return result


def evaluate_predictions(rows: Iterable[Any], parse_mode: str = "strict", n_bootstrap: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """Parse predictions rows with ``parse_mode`` and compute every metric (JSON-serialisable, fractions).

    Per task, per group (``pooled``, ``macro`` and ``paper`` conventions, see
    :func:`emocaliber.metrics.evaluate_items`) and overall, with bootstrap intervals, parse rates, error reasons,
    the release's selective table, per-sample spread when K > 1 and an ``oracle`` block when records carry
    ``meta.oracle_label`` and ``meta.oracle_confidence`` (SynthEmo).
    """
    return _evaluate_parsed(parse_rows(rows, parse_mode), parse_mode, n_bootstrap, seed)


# ---------------------------------------------------------------------------------------------------- plots
def _xy(conf: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Drop missing confidences (None/NaN): plots show what can be placed on the confidence axis."""
    c = np.array([np.nan if v is None else v for v in conf], dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    keep = ~np.isnan(c)
    return c[keep], y[keep]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_reliability(curves: dict[str, tuple[Any, Any]], path: str | os.PathLike, title: str = "Reliability diagram",
                     n_bins: int | None = None) -> Path:
    """Reliability diagram of one or several models on one figure; returns the PNG path.

    ``curves``: name -> (confidences, correct). Points sit at the distinct stated values when a model uses at most
    25 of them, else at 10 canonical bins (``n_bins`` forces bins). Each point has a 95% Wilson interval; the lower
    panel shows how many items each point stands on (also written next to the points for one or two curves), so
    sparse points are not over-read.
    """
    fig = _figure(7.5, 8)
    ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="ideal (accuracy = confidence)")
    colours = _colours(len(curves))
    for i, (name, (conf, correct)) in enumerate(curves.items()):
        c, y = _xy(conf, correct)
        if not len(c):
            ax.plot([], [], color=colours[i], label=f"{name}: no confidences")
            continue
        few_values = len(np.unique(np.round(c, 6))) <= 25
        bins = None if n_bins is None and few_values else (n_bins or 10)
        t = M.reliability_table(c, y, bins)
        x, acc, cnt = np.array(t["confidence"]), np.array(t["accuracy"]), np.array(t["count"])
        err = np.clip(np.vstack([acc - np.array(t["lower"]), np.array(t["upper"]) - acc]), 0, None)
        label = f"{name}: ECE {M.ece(c, y):.3f}, n={len(c)}"
        ax.errorbar(x, acc, yerr=err, color=colours[i], lw=1.5, capsize=3, marker="o", ms=4, label=label)
        for xi, ai, ni in zip(x, acc, cnt) if len(curves) <= 2 else ():  # beyond two, the lower panel only
            ax.annotate(str(ni), (xi, ai), textcoords="offset points", xytext=(4, -10 - 8 * i), fontsize=7,
                        color=colours[i])
        # Count bars sit at bin centres (binned) or at the stated values, side by side across curves.
        centres = (M.bin_index(x, bins) + 0.5) / bins if bins else x
        width = (0.8 / bins if bins else 0.012) / len(curves)
        axh.bar(centres + (i - (len(curves) - 1) / 2) * width, cnt, width=width, color=colours[i], alpha=0.8)
    ax.set(xlim=(0, 1.03), ylim=(0, 1.03), ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    axh.set(xlabel="stated confidence", ylabel="items")
    axh.grid(alpha=0.3)
    fig.savefig(path)
    return Path(path)


def plot_risk_coverage(curves: dict[str, tuple[Any, Any]], path: str | os.PathLike,
                       title: str = "Risk-coverage") -> Path:
    """Selective risk (error rate among answered items) against coverage, answering the most confident first;
    one point per distinct confidence because tied items cannot be separated. Lower is better."""
    fig = _figure(7.5, 5.5)
    ax = fig.subplots()
    for colour, (name, (conf, correct)) in zip(_colours(len(curves)), curves.items()):
        c, y = _xy(conf, correct)
        if not len(c):
            ax.plot([], [], color=colour, label=f"{name}: no confidences")
            continue
        rc = M.risk_coverage_curve(c, y)
        label = f"{name}: AURC {M.aurc(c, y):.3f}, E-AURC {M.e_aurc(c, y):.3f}"
        ax.plot(rc["coverage"], rc["risk"], marker="o", ms=3, lw=1.5, color=colour, label=label)
        ax.axhline(1 - y.mean(), color=colour, ls=":", lw=1)
    ax.set(xlim=(0, 1.01), ylim=(0, None), xlabel="coverage (fraction of items answered)",
           ylabel="selective risk (error rate among answered)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, title="dotted: error rate at full coverage", title_fontsize=8)
    fig.savefig(path)
    return Path(path)


def plot_confidence_histograms(curves: dict[str, tuple[Any, Any]], path: str | os.PathLike,
                               title: str = "Stated confidence, correct vs wrong", n_bins: int = 20) -> Path:
    """One panel per curve: how often each confidence (canonical bins) is stated on correct and wrong answers.
    A model that discriminates puts its wrong answers to the left of its correct ones."""
    fig = _figure(4.2 * max(len(curves), 1), 4.2)
    axes = np.atleast_1d(fig.subplots(1, max(len(curves), 1), sharey=False))
    centres = (np.arange(n_bins) + 0.5) / n_bins
    for ax, (name, (conf, correct)) in zip(axes, curves.items()):
        c, y = _xy(conf, correct)
        k = M.bin_index(c, n_bins) if len(c) else np.zeros(0, dtype=np.int64)
        for flag, colour, label, side in ((1, "tab:green", "correct", -1), (0, "tab:red", "wrong", 1)):
            counts = np.bincount(k[y == flag], minlength=n_bins)
            ax.bar(centres + side * 0.25 / n_bins, counts, width=0.5 / n_bins, color=colour, alpha=0.85,
                   label=f"{label} ({int(counts.sum())})")
        ax.set(xlim=(0, 1), xlabel="stated confidence", ylabel="items", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _group_curves(p: ParsedRows) -> dict[str, tuple[list[float | None], list[bool]]]:
    correct = [a is not None and a == t for a, t in zip(p.predictions, p.truths)]
    out: dict[str, tuple[list[float | None], list[bool]]] = {}
    groups = [get_task(t).group for t in p.tasks]
    for g in GROUPS:
        idx = [i for i, gi in enumerate(groups) if gi == g]
        if idx:
            out[g] = ([p.confidences[i] for i in idx], [correct[i] for i in idx])
    return out


def _oracle_curves(p: ParsedRows) -> dict[str, tuple[list[float], list[bool]]]:
    out: dict[str, tuple[list[float], list[bool]]] = {}
    for task, truth, label, conf in p.oracle.values():
        c, y = out.setdefault(get_task(task).group, ([], []))
        c.append(conf)
        y.append(label == truth)
    return out


def _plots(p: ParsedRows, out_dir: Path, mode: str) -> list[str]:
    files = []
    groups, oracle = _group_curves(p), _oracle_curves(p)
    for g, curve in groups.items():
        curves = {"model": curve, **({"oracle": oracle[g]} if g in oracle else {})}
        name = f"reliability_{_slug(g)}.png"
        plot_reliability(curves, out_dir / name, f"Reliability, {g} ({mode} parsing)")
        files.append(name)
    plot_risk_coverage(groups, out_dir / "risk_coverage.png", f"Risk-coverage by group ({mode} parsing)")
    plot_confidence_histograms(groups, out_dir / "confidence_hist.png",
                               f"Stated confidence on correct and wrong answers ({mode} parsing)")
    return [*files, "risk_coverage.png", "confidence_hist.png"]


# -------------------------------------------------------------------------------------------------- markdown
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _pct_ci(block: dict[str, Any], name: str) -> str:
    value = _pct(block["metrics"].get(name))
    ci = block.get("ci", {}).get(name)
    return value if not ci or ci[0] is None else f"{value} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


_CAL_COLUMNS = (("ECE10", "ece_10"), ("ECE15", "ece_15"), ("ECE release rule", "ece_release"),
                ("ECE equal-mass", "ece_equal_mass"), ("ECE unique", "ece_unique"), ("MCE10", "mce_10"),
                ("Brier", "brier"), ("REL", "brier_reliability"), ("RES", "brier_resolution"),
                ("UNC", "brier_uncertainty"), ("NLL", "nll"), ("AUROC", "auroc"), ("AURC", "aurc"),
                ("E-AURC", "e_aurc"), ("Acc@50% cov", "selective_accuracy_cov50"),
                ("Acc@80% cov", "selective_accuracy_cov80"))


def _mode_markdown(r: dict[str, Any]) -> list[str]:
    mode = r["parse_mode"]
    lines = [f"## Parse mode: {mode}", ""]
    units = [*r["tasks"].items(), *r["groups"].items(), ("Overall", r["overall"])]
    lines += ["### Parse rates", ""]
    lines += _table(("Task / group", "Rows", "Error rows", "Label parsed", "Confidence parsed", "Valid format"),
                    ((u, b["parse"]["n_rows"], b["parse"]["n_error_rows"], _pct(b["parse"]["label_parse_rate"]),
                      _pct(b["parse"]["confidence_parse_rate"]), _pct(b["parse"]["format_rate"])) for u, b in units))
    lines += ["", "### Per task (as the release's metric.log)", ""]
    lines += _table(("Task", "Acc", "wF1", "N"),
                    ((t, _pct_ci(b, "accuracy"), _pct_ci(b, "weighted_f1"), b["metrics"]["n"])
                     for t, b in r["tasks"].items()))
    conventions = (("paper", ("paper convention: Acc and wF1 = unweighted mean of the tasks, ECE (canonical "
                    "10 bins, and the release's rule), Brier and AUROC pooled over the group's items")),
                   ("pooled", ("pooled convention: every metric over all of the group's items (the release "
                    "script's output)")))
    for key, what in conventions:
        lines += ["", f"### Per group, {what} (as metric_conf.log)", ""]
        rows = []
        for g, b in [*r["groups"].items(), ("Overall", r["overall"])]:
            blk = b[key]
            rows.append((g, _pct_ci(blk, "accuracy"), _pct_ci(blk, "weighted_f1"), _pct_ci(blk, "ece_10"),
                         _pct(blk["metrics"]["ece_release"]), _pct_ci(blk, "brier"), _pct_ci(blk, "auroc"),
                         blk["metrics"]["n"], blk["metrics"]["n_missing_confidence"]))
        lines += _table(("Group", "Acc", "wF1", "ECE", "ECE release rule", "Brier", "AUROC", "N",
                         "N without confidence"), rows)
    lines += ["", "### Calibration detail (pooled per task and group; ×100)", ""]
    lines += _table(("Unit", *(c for c, _ in _CAL_COLUMNS)),
                    ((u, *(_pct(b.get("pooled", b)["metrics"][m]) for _, m in _CAL_COLUMNS))
                     for u, b in units))
    lines += ["", ("### Selective prediction at the release's thresholds (pooled; accuracy / coverage over items "
              "with confidence >= t; coverage counts items without confidence too)"), ""]
    thresholds = r["settings"]["thresholds"]
    sel_rows = []
    for u, b in units:
        table = b.get("pooled", b)["selective_thresholds"]
        sel_rows.append((u, *(f"{_pct(a)} / {_pct(c)}" for a, c in zip(table["accuracy"], table["coverage"]))))
    lines += _table(("Unit", *(f"t={t}" for t in thresholds)), sel_rows)
    if "per_sample" in r:
        ps = r["per_sample"]
        lines += ["", "### Spread over sample index (all tasks)", ""]
        lines += _table(("Sample", "Acc", "ECE10"), zip(ps["sample"], map(_pct, ps["accuracy"]),
                                                         map(_pct, ps["ece_10"])))
    if "oracle" in r:
        o = r["oracle"]
        lines += ["", (f"### Oracle (SynthEmo meta.oracle_label with meta.oracle_confidence, {o['n_records']} "
                  "records)"), ""]
        lines += _table(("Group", "Acc (paper)", "ECE10", "Brier", "AUROC", "N"),
                        ((g, _pct_ci(b["paper"], "accuracy"), _pct_ci(b["paper"], "ece_10"),
                          _pct(b["paper"]["metrics"]["brier"]), _pct(b["paper"]["metrics"]["auroc"]),
                          b["paper"]["metrics"]["n"]) for g, b in [*o["groups"].items(), ("Overall", o["overall"])]))
    lines += ["", "### Rows without a scorable answer", ""]
    lines.append(f"- error rows by reason: {r['error_reasons'] or 'none'}")
    lines.append(f"- skipped rows (not valid predictions rows): {r['skipped_rows']['n']}")
    lines.append(f"- parser problems (most common): {r['parse_problems'] or 'none'}")
    return lines + [""]


def report_markdown(metrics: dict[str, Any]) -> str:
    """report.md: the release's tables (per task Acc/wF1/N; per group Acc/wF1/ECE/Brier/AUROC/N), both group
    conventions labelled, parse rates and calibration detail. Values ×100 with two decimals, 95% CIs in brackets."""
    first = metrics["modes"][metrics["parse_modes"][0]]
    s = first["settings"]
    lines = ["# EmoCaliber evaluation report", "",
             (f"Source: `{metrics.get('source') or 'rows given in memory'}`; {first['n_rows']} scored rows, "
             f"{first['n_records']} records, samples per record {first['samples_per_record']}."
             + (f" {dropped_line(metrics.get('dropped_input'))}" if metrics.get("dropped_input") else "")),
             (f"Values are percentages (×100). Brackets: {100 * s['ci_level']:.0f}% {s['ci_method']} bootstrap "
             f"interval, {s['n_bootstrap']} resamples stratified by {s['bootstrap_strata']}, resampling unit "
             f"{s['bootstrap_unit']}, seed {s['seed']}."),
             ("Rows with an error or no parsable label count as wrong; rows without a parsable confidence are "
             "left out of calibration metrics only. ECE uses the canonical binning ([k/10, (k+1)/10), last bin "
             "closed); 'ECE release rule' reproduces the released script (c = 1.0 in no bin) for comparison with "
             "the paper, whose numbers also assume 'release' parsing. Binned ECE is biased upward under "
             "resampling, so on small groups its interval can sit above the point estimate."), ""]
    if metrics.get("unreadable_lines"):
        lines += [(f"Unreadable lines skipped: {len(metrics['unreadable_lines'])} "
                  f"(first: {metrics['unreadable_lines'][0]})"), ""]
    for mode in metrics["parse_modes"]:
        lines += _mode_markdown(metrics["modes"][mode])
    if metrics.get("plots"):
        lines += ["## Plots", ""] + [f"![{f}]({f})" for f in metrics["plots"]] + [""]
    return "\n".join(lines)


def write_report(rows_or_path: str | os.PathLike | Iterable[Any], out_dir: str | os.PathLike,
                 parse_modes: Sequence[str] = PARSE_MODES, n_bootstrap: int = 1000, seed: int = 0,
                 dropped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate under each parse mode and write metrics.json, report.md and the PNG plots (first mode's parse).

    Returns what metrics.json holds: ``{"source", "parse_modes", "modes": {mode: evaluate_predictions(...)},
    "plots", "unreadable_lines", "dropped_input"}``. ``dropped`` (from the caller that read the input file:
    lines read, lines dropped, count per reason) is stated next to n, so a score over a fraction of the input
    cannot pass for a score over all of it. The same input and seed give the same metrics.json bytes.
    """
    parse_modes = tuple(parse_modes)
    if not parse_modes:
        raise ValueError("parse_modes is empty; give at least one of " + ", ".join(PARSE_MODES))
    rows, source, unreadable = load_rows(rows_or_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modes, parsed = {}, {}
    for mode in parse_modes:
        parsed[mode] = parse_rows(rows, mode)
        modes[mode] = _evaluate_parsed(parsed[mode], mode, n_bootstrap, seed)
    plots = _plots(parsed[parse_modes[0]], out, parse_modes[0])
    metrics = {"source": source, "parse_modes": list(parse_modes), "modes": modes, "plots": plots,
               "unreadable_lines": unreadable, "dropped_input": dropped}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    write_text_atomic(out / "report.md", report_markdown(metrics))
    return metrics


def dropped_line(dropped: dict[str, Any] | None) -> str | None:
    """One sentence: how many input lines were read and dropped, and why (None when nothing is known)."""
    if not dropped:
        return None
    reasons = "; ".join(f"{n} {why}" for why, n in dropped.get("reasons", {}).items())
    share = dropped["n_dropped"] / dropped["n_lines"] if dropped.get("n_lines") else 0.0
    return (f"Input: {dropped['n_lines']} data lines read, {dropped['n_dropped']} dropped ({100 * share:.1f}%)"
            + (f": {reasons}" if reasons else "") + ".")


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A one-screen console summary of :func:`write_report`'s result (or of one :func:`evaluate_predictions`)."""
    modes = metrics["modes"] if "modes" in metrics else {metrics["parse_mode"]: metrics}
    lines = []
    for mode, r in modes.items():
        p = r["overall"]["parse"]
        lines.append(f"[{mode}] {p['n_rows']} rows: label parsed {_pct(p['label_parse_rate'])}%, confidence "
                     f"{_pct(p['confidence_parse_rate'])}%, format {_pct(p['format_rate'])}%, "
                     f"{p['n_error_rows']} error rows")
        for g, b in [*r["groups"].items(), ("Overall", r["overall"])]:
            m = b["paper"]["metrics"]
            lo_hi = b["paper"].get("ci", {}).get("ece_10") or [None, None]
            ci = f" [{_pct(lo_hi[0])}, {_pct(lo_hi[1])}]" if lo_hi[0] is not None else ""
            # The release-rules summary also shows the release's own ECE rule, each ECE labelled by its rule.
            release_ece = f"  ECE-rel {_pct(m['ece_release'])}" if mode == "release" else ""
            lines.append(f"[{mode}] {g:<10} Acc {_pct(m['accuracy'])}  wF1 {_pct(m['weighted_f1'])}  "
                         f"ECE10 {_pct(m['ece_10'])}{ci}{release_ece}  Brier {_pct(m['brier'])}  "
                         f"AUROC {_pct(m['auroc'])}  n={m['n']}")
        if "oracle" in r:
            m = r["oracle"]["overall"]["paper"]["metrics"]
            lines.append(f"[{mode}] oracle     Acc {_pct(m['accuracy'])}  ECE10 {_pct(m['ece_10'])}  "
                         f"Brier {_pct(m['brier'])}  AUROC {_pct(m['auroc'])}  n={m['n']}")
    lines.append("(x100. Acc/wF1: mean over the group's tasks, calibration pooled over its rows, the paper's group "
                 "convention. ECE10: canonical 10 bins [k/10, (k+1)/10), last closed; bracket = 95% CI)")
    if "release" in modes:
        lines.append("(ECE-rel: the release script's rule, np.linspace edges with c = 1.0 in no bin, for comparison "
                     "with the paper; the release's row rules differ too: docs/evaluation.md)")
    if metrics.get("dropped_input"):
        lines.append(dropped_line(metrics["dropped_input"]))
    return lines
