"""metrics.json -> report.md, per_emotion.csv and plots for an EmoNet-Face evaluation (the VECBench report's
style: headline table with 95% bootstrap intervals, then detail)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber.report import _figure, _table, plot_reliability

READOUT_TEXT = {
    "verbal": "verification question, stated confidence (P = c for yes, 1 - c for no)",
    "first_token": "bare yes/no question, P(yes) from the first answer token's logits",
    "generative": "top-k emotions with confidences per image (unlisted = 0)",
}


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(block: dict) -> str:
    lo, hi = block.get("ci") or (None, None)
    return f"{_f(block.get('value'))} [{_f(lo)}, {_f(hi)}]"


def report_markdown(m: dict) -> str:
    h = m["humans"]
    lines = ["# EmoNet-Face HQ evaluation", "",
             (f"Model `{m['model']}`; {m['n_images']} images x {len(m['emotions'])} emotions; {m['n_humans']} human "
             f"raters. Human-human kappa (mean over pairs x emotions): {_f(h['human_human_kappa_mean'])}; "
             f"Krippendorff's alpha (mean over emotions): {_f(h['alpha_mean'])}; reliable emotions "
             f"(alpha >= 0.3): {len(h['reliable_emotions'])}."), ""]
    if m["hq_bad_rows"]["total"]:
        lines += [f"**{m['hq_bad_rows']['total']} bad rows of hq.csv were skipped**: "
                  + "; ".join(f"{k}: {v}" for k, v in m["hq_bad_rows"]["by_reason"].items()), ""]
    rows = []
    for name, r in m["readouts"].items():
        cal = r.get("calibration", {})
        c1, c1r = cal.get("present_ge1/all", {}), cal.get("present_ge1/reliable", {})
        test = r["kappa"]["could_be_annotator"]
        rows.append([name, _f(r["parse"]["parse_rate"]), _f(r["kappa"]["mean"]), _f(r["kappa"]["reliable_mean"]),
                     f"{_f(r['spearman']['mean'])} [{_f(r['spearman']['ci'][0])}, {_f(r['spearman']['ci'][1])}]",
                     f"{_f(test['p_value'], 4)} ({'yes' if test['could_be_annotator'] else 'no'})",
                     _ci(c1.get("auroc", {})), _ci(c1.get("ece", {})), _ci(c1.get("brier", {})),
                     _f(c1r.get("auroc", {}).get("value"))])
    lines += ["## Headline", "",
              *_table(["readout", "parsed", "kappa", "kappa (reliable)", "Spearman [95% CI]",
                       "Mann-Whitney p (could be annotator)", "AUROC >=1", "ECE >=1", "Brier >=1",
                       "AUROC >=1 (reliable)"], rows), "",
              ("kappa: quadratic weighted, ratings truncated to int, mean over humans then emotions (release). "
              "Spearman: against the per-image human median, mean over emotions, CI over emotions. "
              "Calibration: P(present) against the human median >= 1 (>= 2 in metrics.json), CIs over images."), ""]
    for name, r in m["readouts"].items():
        lines.append(f"- **{name}**: {READOUT_TEXT[name]}; intensity {r['intensity']}.")
    lines += ["", "## Per emotion", "", "See per_emotion.csv and per_emotion.png.", ""]
    return "\n".join(lines) + "\n"


def per_emotion_rows(m: dict) -> list[dict]:
    rows = []
    for j, e in enumerate(m["emotions"]):
        row = {"emotion": e, "alpha": m["humans"]["krippendorff_alpha"][j],
               "human_human_kappa": m["humans"]["human_human_kappa_per_emotion"][j],
               "reliable": e in m["humans"]["reliable_emotions"]}
        for name, r in m["readouts"].items():
            row[f"{name}_kappa"] = r["per_emotion"]["kappa"][j]
            row[f"{name}_spearman"] = r["per_emotion"]["spearman"][j]
            if "auroc_present_ge1" in r["per_emotion"]:
                row[f"{name}_auroc_ge1"] = r["per_emotion"]["auroc_present_ge1"][j]
        rows.append(row)
    return rows


def plot_per_emotion(rows: list[dict], readouts: list[str], path: Path) -> None:
    fig = _figure(max(8.0, 0.28 * len(rows) + 3), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    series = [("human_human_kappa", "human-human")] + [(f"{r}_kappa", r) for r in readouts]
    width = 0.8 / len(series)
    for s, (key, label) in enumerate(series):
        ax.bar(x + s * width, [np.nan if row[key] is None else row[key] for row in rows], width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, [row["emotion"] for row in rows], rotation=90, fontsize=7)
    ax.set_ylabel("quadratic weighted kappa")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    fig.savefig(path)


def write_report(metrics: dict, matrices: dict[str, np.ndarray], reference: Any, out: Path) -> None:
    out = Path(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(metrics), encoding="utf-8")
    rows = per_emotion_rows(metrics)
    with (out / "per_emotion.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_per_emotion(rows, list(metrics["readouts"]), out / "per_emotion.png")
    y = (reference.median >= 1).reshape(-1)
    curves = {}
    for name, p in matrices.items():
        flat = p.reshape(-1)
        keep = ~np.isnan(flat)
        if keep.any():
            curves[name] = (flat[keep].tolist(), y[keep].tolist())
    if curves:
        plot_reliability(curves, out / "reliability.png", title="P(present) vs human median >= 1")
