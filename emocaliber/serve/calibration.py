"""What a stated confidence has meant on a benchmark: per-bin accuracy of one evaluation, for the demo page.

``metrics.json`` (``emocaliber eval``) holds summary metrics (ECE, Brier, selective accuracy above thresholds)
but no per-bin counts, so the bins are computed here from the ``predictions.jsonl`` the same run wrote beside it,
read with the same parser (strict mode) the page uses for its own answer. A row without a confidence cannot be
placed on the axis and is left out, as in the evaluation's calibration metrics; a label that does not parse
counts as wrong, as in its accuracy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emocaliber import metrics as M
from emocaliber.evaluation import PREDICTIONS_FILE
from emocaliber.report import load_rows, parse_rows

PARSE_MODE = "strict"  # the mode EmoCaliber.predict reads the page's answer with


class MetricsError(ValueError):
    """A metrics.json (or the predictions beside it) that cannot give per-bin accuracy; the message says why."""


@dataclass(frozen=True)
class BinStat:
    """One confidence bin ``[lo, hi)`` of one scope (a task, or all tasks pooled)."""

    scope: str
    lo: float
    hi: float
    index: int
    n: int
    accuracy: float | None
    mean_confidence: float | None

    def sentence(self, confidence: float) -> str:
        """The observed-accuracy sentence for a stated ``confidence`` that falls in this bin."""
        where = f"[{self.lo:.2f}, {self.hi:.2f}{']' if self.hi >= 1 else ')'}"
        if not self.n:
            return (f"This evaluation has no answer on {self.scope} with a confidence in {where}: there is nothing "
                    f"to compare {confidence:.2f} with.")
        return (f"When this model says {confidence:.2f} on {self.scope}, it was right {100 * self.accuracy:.0f}% "
                f"of the time, n={self.n} (answers with a confidence in {where}).")


class Calibration:
    """Per-task and pooled confidence bins of one evaluation run."""

    def __init__(self, rows: dict[str, tuple[np.ndarray, np.ndarray]], n_bins: int, source: str, note: str = ""):
        self.n_bins = n_bins
        self.source = source
        self.note = note
        self._rows = rows  # scope -> (confidences, correct), rows with a confidence only

    @property
    def tasks(self) -> list[str]:
        return [t for t in self._rows if t != ALL]

    def scope_for(self, task: str | None) -> str:
        """The task's own bins when the evaluation has that task; otherwise all its tasks pooled."""
        return task if task in self._rows else ALL

    def scope_name(self, scope: str) -> str:
        return f"all {len(self.tasks)} tasks of this evaluation" if scope == ALL else scope

    def bins(self, scope: str) -> list[BinStat]:
        conf, correct = self._rows[scope]
        k = M.bin_index(conf, self.n_bins) if len(conf) else np.zeros(0, dtype=np.int64)
        n = np.bincount(k, minlength=self.n_bins)
        right = np.bincount(k, weights=correct, minlength=self.n_bins)
        total = np.bincount(k, weights=conf, minlength=self.n_bins)
        return [BinStat(self.scope_name(scope), i / self.n_bins, (i + 1) / self.n_bins, i, int(n[i]),
                        float(right[i] / n[i]) if n[i] else None, float(total[i] / n[i]) if n[i] else None)
                for i in range(self.n_bins)]

    def lookup(self, task: str | None, confidence: float) -> BinStat:
        scope = self.scope_for(task)
        return self.bins(scope)[int(M.bin_index([confidence], self.n_bins)[0])]

    def figure(self, task: str | None, confidence: float | None = None):
        """The reliability diagram of the scope ``task`` maps to, with the bin of ``confidence`` marked."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        scope = self.scope_for(task)
        stats = self.bins(scope)
        marked = None if confidence is None else int(M.bin_index([confidence], self.n_bins)[0])
        fig = Figure(figsize=(5.2, 4.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        width = 1 / self.n_bins
        for s in stats:
            if not s.n:
                continue
            colour = "#d9480f" if s.index == marked else "#4c6ef5"
            ax.bar(s.lo + width / 2, s.accuracy, width=width * 0.9, color=colour, alpha=0.9 if s.index == marked
                   else 0.55, edgecolor="black" if s.index == marked else "none")
            ax.annotate(f"n={s.n}", (s.lo + width / 2, s.accuracy), textcoords="offset points", xytext=(0, 2),
                        ha="center", fontsize=7)
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="accuracy = confidence")
        if confidence is not None:
            ax.axvline(confidence, color="#d9480f", lw=1.5, label=f"this answer: {confidence:.2f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="stated confidence (bin)", ylabel="accuracy in bin",
               title=f"Reliability on {self.scope_name(scope)}")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        return fig


ALL = "*"


def predictions_path(metrics_path: Path, metrics: dict[str, Any]) -> Path:
    """The predictions file the metrics were computed from: beside metrics.json first (a copied run directory
    keeps working), else the path metrics.json records as its source."""
    beside = metrics_path.parent / PREDICTIONS_FILE
    if beside.is_file():
        return beside
    source = metrics.get("source")
    if isinstance(source, str) and Path(source).is_file():
        return Path(source)
    raise MetricsError(f"{metrics_path}: per-bin accuracy needs the predictions the metrics came from, and neither "
                       f"{beside} nor the recorded source {source!r} exists; keep predictions.jsonl beside "
                       "metrics.json")


def load_calibration(metrics_path: str | os.PathLike, n_bins: int = 10) -> Calibration:
    """Read an evaluation's metrics.json and the predictions.jsonl it came from."""
    metrics_path = Path(metrics_path)
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetricsError(f"metrics file not found: {metrics_path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetricsError(f"{metrics_path}: not a JSON file ({e})") from None
    if not isinstance(metrics, dict) or "modes" not in metrics:
        raise MetricsError(f"{metrics_path}: not a metrics.json written by `emocaliber eval` (no 'modes' key)")
    path = predictions_path(metrics_path, metrics)
    rows, _, unreadable = load_rows(path)
    parsed = parse_rows(rows, PARSE_MODE)
    if not parsed.tasks:
        raise MetricsError(f"{path}: no scorable predictions rows")
    conf = np.array([np.nan if c is None else c for c in parsed.confidences], dtype=np.float64)
    correct = np.array([p is not None and p == t for p, t in zip(parsed.predictions, parsed.truths)], dtype=float)
    tasks = np.array(parsed.tasks)
    has = ~np.isnan(conf)
    scopes = {t: (conf[has & (tasks == t)], correct[has & (tasks == t)]) for t in M.task_order(parsed.tasks)}
    scopes[ALL] = (conf[has], correct[has])
    left_out = len(parsed.skipped) + len(unreadable)
    note = (f"{int((~has).sum())} of {len(conf)} answers stated no readable confidence and are not in the bins"
            + (f"; {left_out} rows of {path.name} were unreadable or invalid and skipped" if left_out else ""))
    return Calibration(scopes, n_bins, str(path), note)
