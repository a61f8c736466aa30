"""Accuracy and calibration metrics for verbalized confidence, with a vectorised, stratified bootstrap.

Every function takes plain sequences or arrays and returns fractions (not percentages) as Python floats, NaN
where a metric is undefined (no items, or AUROC with one class).

Why the binning is implemented here rather than taken from a library: verbalized confidences sit on a grid (0.3,
0.7, 0.85, 1.0), i.e. exactly on equal-width bin edges, and the libraries disagree precisely there. Float64
``np.linspace(0, 1, 11)`` edges are 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, so
numpy/netcal/relplot and the EmoCaliber release (``calculate_ece`` in wdqqdw/EmoCaliber's
``inference/evaluate_multi_task_conf_from_merged.py``) put 0.3, 0.6 and 0.7 into the bin *below*; torchmetrics
builds edges in the input dtype (float32 and float64 give different ECEs) and sends c = 1.0 to a hidden extra bin
(https://github.com/Lightning-AI/torchmetrics/issues/3510); the release drops c = 1.0 from every bin but keeps it
in the denominator. The same synthetic data scores 0.066 to 0.146 across them. So the canonical rule here reads
every confidence at 1e-6 resolution, ``q = round(c * 10**6)``, and bins in integer arithmetic:
``k = min(q * M // 10**6, M - 1)``, i.e. bins ``[k/M, (k+1)/M)`` with the last one closed, so 0.0 and 1.0 are
both counted and 0.3 starts bin 3. Bin sums of ``q`` are exact integers, so float32 and float64 inputs give
bit-identical ECE. ``scheme="release"`` reproduces the release's rule exactly, for comparison with the paper
only.

Bootstrap: items are resampled with replacement inside each task (so a group's task mix is fixed), by record when
several samples of one record exist (a cluster bootstrap), all resamples at once as an index matrix. Every metric
is then a function of per-resample counts over the distinct confidence values (``np.bincount`` over
(resample, value)) and their prefix sums, so 1,000 resamples of 8,035 items take about one CPU second
(``bench/metrics_bench.py``). Percentile intervals; binned ECE is biased upward under resampling, so for a
well-calibrated model or a small group its interval can sit above the point estimate.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from emocaliber.tasks import GROUPS, VECBENCH_TASKS, get_task

#: Resolution at which confidences are read for binning (verbalized values have two or three decimals).
SCALE = 1_000_000
#: The release's selective-prediction thresholds (accuracy and coverage over items with c >= t).
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COVERAGES = (0.5, 0.8)
#: NLL clipping (NLL is undefined at c = 0 and c = 1): half of the 0.01 grid step, so no two-decimal value is moved.
NLL_EPS = 0.005
ECE_SCHEMES = ("canonical", "release", "equal_mass", "unique")

#: Metric names in report order (all fractions except the counts).
COUNT_METRICS = ("n", "n_missing_confidence")
METRICS = (
    "accuracy", "weighted_f1", "confidence_rate", "accuracy_with_confidence", "mean_confidence",
    "ece_10", "ece_15", "ece_release", "ece_equal_mass", "ece_unique", "mce_10",
    "brier", "brier_reliability", "brier_resolution", "brier_uncertainty", "nll", "nll_clipped_fraction",
    "auroc", "aurc", "e_aurc", *(f"selective_accuracy_cov{round(k * 100)}" for k in COVERAGES),
)


# ----------------------------------------------------------------------------------------------- validation
def _confidences(confidences: Any, *, allow_missing: bool = False) -> np.ndarray:
    """float64 array; None/NaN allowed only as 'missing'; anything else must be finite in [0, 1]."""
    if allow_missing:
        c = np.array([np.nan if v is None else v for v in confidences], dtype=np.float64)
    else:
        c = np.asarray(confidences, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"confidences must be one-dimensional, got shape {c.shape}")
    bad = ~(np.isfinite(c) | (allow_missing & np.isnan(c))) | (c < 0) | (c > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"confidences[{i}] = {c[i]!r} is not a finite number in [0, 1] "
                         f"({int(bad.sum())} such values); parse or clip confidences before scoring")
    return c


def _correct(correct: Any, n: int) -> np.ndarray:
    y = np.asarray(correct)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"correct has {len(y) if y.ndim == 1 else y.shape} entries, confidences {n}; "
                         "pass one correctness flag per confidence")
    y = y.astype(np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        i = int(np.flatnonzero(~np.isin(y, (0.0, 1.0)))[0])
        raise ValueError(f"correct[{i}] = {y[i]!r}: correctness must be boolean or 0/1")
    return y


def _check(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    c = _confidences(confidences)
    return c, _correct(correct, len(c))


# ------------------------------------------------------------------------- counts over distinct confidences
def _micro(values: np.ndarray) -> np.ndarray:
    return np.rint(values * SCALE).astype(np.int64)


def _bins(q: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum(q * n_bins // SCALE, n_bins - 1)


def bin_index(confidences: Any, n_bins: int = 10) -> np.ndarray:
    """Canonical equal-width bin of each confidence, ``min(round(c * 10**6) * M // 10**6, M - 1)``: bins
    ``[k/M, (k+1)/M)``, the last one closed, so 0.3 is in bin 3 of 10 and 1.0 in bin 9, in any float dtype."""
    return _bins(_micro(_confidences(confidences)), int(n_bins))


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _prefix(x: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums with a leading zero column: the sum over columns [i, j) is P[:, j] - P[:, i]."""
    out = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, out=out[:, 1:])
    return out


class _Cells:
    """Counts per row (a resample, or the data itself) over the distinct confidences, ascending.

    ``n[b, v]`` items and ``s[b, v]`` correct items state ``values[v]`` in row b. Every calibration metric is a
    function of these. Any sum over a contiguous range of values is a difference of two prefix sums, so a binning
    costs a gather of bin edges instead of a pass over the items, whatever the number of resamples.
    """

    def __init__(self, values: np.ndarray, n: np.ndarray, s: np.ndarray):
        self.values, self.n, self.s = values, n, s
        self.total, self.right = n.sum(1), s.sum(1)

    @classmethod
    def of(cls, c: np.ndarray, y: np.ndarray) -> _Cells:
        values, inv = np.unique(c, return_inverse=True)
        n = np.bincount(inv, minlength=len(values)).astype(np.float64)[None]
        return cls(values, n, np.bincount(inv, weights=y, minlength=len(values))[None])

    @cached_property
    def pn(self) -> np.ndarray:
        return _prefix(self.n)

    @cached_property
    def ps(self) -> np.ndarray:
        return _prefix(self.s)

    @cached_property
    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """Values equal at 1e-6 resolution form one run: (run value in micro-units, run start columns + end)."""
        q = _micro(self.values)
        starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
        return q[starts], np.r_[starts, len(q)]

    @cached_property
    def pq(self) -> np.ndarray:
        """Prefix sums of confidence in micro-units: exact integers, so float32 and float64 inputs agree."""
        return _prefix(self.n * _micro(self.values).astype(np.float64))

    def range_sums(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, correct, micro-confidence) per column range [edges[k], edges[k+1]), edges per row or shared."""
        def take(p: np.ndarray) -> np.ndarray:
            g = p[:, edges] if edges.ndim == 1 else np.take_along_axis(p, edges, axis=1)
            return g[:, 1:] - g[:, :-1]
        return take(self.pn), take(self.ps), take(self.pq)


def _gap(right: np.ndarray, micro_conf: np.ndarray) -> np.ndarray:
    """|correct - sum of confidences| of each bin, in micro-units (an exact integer)."""
    return np.abs(right * SCALE - micro_conf)


def _ece_rows(cells: _Cells, n_bins: int, scheme: str) -> np.ndarray:
    run_q, run_edges = cells.runs
    if scheme == "canonical":
        # Bin edges among runs (runs are ascending, so each bin is a contiguous range; empty bins sum to 0).
        edges = run_edges[np.searchsorted(_bins(run_q, n_bins), np.arange(n_bins + 1))]
        _, sb, qb = cells.range_sums(edges)
    elif scheme == "unique":
        _, sb, qb = cells.range_sums(run_edges)
    elif scheme == "equal_mass":
        # A run's bin is the bin of its first item's rank (floor(start * M / N)), so a block of equal values is
        # never split; with distinct values this is the usual N/M items per bin. Bin m ends at the first run with
        # start * M >= (m + 1) * N: one searchsorted over all rows at once, made sortable by a row offset.
        rows, total = cells.n.shape[0], cells.total
        starts = cells.pn[:, run_edges[:-1]] * n_bins
        offset = (n_bins * total.max() + 1) * np.arange(rows)[:, None]
        targets = np.arange(1, n_bins + 1)[None] * total[:, None] + offset
        ends = np.searchsorted((starts + offset).ravel(), targets.ravel()).reshape(rows, n_bins)
        ends -= len(run_q) * np.arange(rows)[:, None]
        edges = run_edges[np.hstack([np.zeros((rows, 1), dtype=np.int64), ends])]
        _, sb, qb = cells.range_sums(edges)
    elif scheme == "release":
        # The release: np.linspace float edges, lo <= c < hi on the float values, so c == 1.0 is in no bin but
        # stays in N; bin confidence sums are taken from the float values as well.
        edges = np.searchsorted(cells.values, np.linspace(0, 1, n_bins + 1), side="left")
        pv = _prefix(cells.n * cells.values)
        sb, cb = (p[:, edges[1:]] - p[:, edges[:-1]] for p in (cells.ps, pv))
        return _safe_div(np.abs(sb - cb).sum(1), cells.total)
    else:
        raise ValueError(f"unknown ECE scheme {scheme!r}; choose one of {ECE_SCHEMES}")
    return _safe_div(_gap(sb, qb).sum(1), cells.total * SCALE)


def _mce_rows(cells: _Cells, n_bins: int, min_count: int) -> np.ndarray:
    run_q, run_edges = cells.runs
    nb, sb, qb = cells.range_sums(run_edges[np.searchsorted(_bins(run_q, n_bins), np.arange(n_bins + 1))])
    gaps = np.where(nb >= max(min_count, 1), _safe_div(_gap(sb, qb), nb * SCALE), -np.inf)
    out = gaps.max(1)
    return np.where(np.isfinite(out), out, np.nan)


def _brier_rows(cells: _Cells) -> dict[str, np.ndarray]:
    """Brier and its Murphy decomposition over distinct values, where REL - RES + UNC equals Brier exactly:
    with a_v = s_v / n_v, REL = sum n (v - a_v)^2 / N, RES = sum n (a_v - a)^2 / N, UNC = a (1 - a)."""
    v, n, s, total = cells.values, cells.n, cells.s, cells.total
    ybar = _safe_div(cells.right, total)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2n = np.where(n > 0, s * s / np.where(n > 0, n, 1), 0.0).sum(1)   # sum n a_v^2
    nv2, vs = n @ (v * v), s @ v
    return {
        "brier": _safe_div(nv2 - 2 * vs + cells.right, total),
        "brier_reliability": _safe_div(nv2 - 2 * vs + s2n, total),
        "brier_resolution": _safe_div(s2n, total) - ybar**2,
        "brier_uncertainty": ybar * (1 - ybar),
    }


def _nll_rows(cells: _Cells, eps: float) -> tuple[np.ndarray, np.ndarray]:
    cc = np.clip(cells.values, eps, 1 - eps)
    log_right, log_wrong = np.log(cc), np.log1p(-cc)
    loss = -(cells.s @ (log_right - log_wrong) + cells.n @ log_wrong)
    clipped = cells.n @ ((cells.values < eps) | (cells.values > 1 - eps)).astype(np.float64)
    return _safe_div(loss, cells.total), _safe_div(clipped, cells.total)


def _auroc_rows(cells: _Cells) -> np.ndarray:
    """P(c_right > c_wrong) + P(tie) / 2 from counts: the trapezoid rule of ``roc_auc_score``."""
    wrong_below = (cells.pn - cells.ps)[:, :-1]
    num = (cells.s * (wrong_below + 0.5 * (cells.n - cells.s))).sum(1)
    return _safe_div(num, cells.right * (cells.total - cells.right))


def _harmonic(k: np.ndarray) -> np.ndarray:
    top = int(k.max()) if k.size else 0
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    return table[k.astype(np.int64)]


def _accepted(cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """Items and correct items with confidence >= each value (accepting that value's block and all above it)."""
    return cells.total[:, None] - cells.pn[:, :-1], cells.right[:, None] - cells.ps[:, :-1]


def _aurc_rows(cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """AURC and E-AURC with ties accepted or rejected together.

    Items are accepted in blocks of equal confidence, highest first; each item is charged the selective risk at
    the end of its block, so AURC = sum_blocks (n_j / N) * risk_j. Without ties this is Geifman's per-item mean;
    with ties it never depends on an arbitrary order inside a block. The optimum is the exact discrete one,
    (1/N) sum_{i=1..E} i / (C + i) = (E - C (H_N - H_C)) / N, so a perfect ranking has E-AURC = 0 (the
    continuous r + (1-r) ln(1-r) of Geifman et al. and fd-shifts is below it by at most r/N); E-AURC >= 0.
    """
    kept_n, kept_s = _accepted(cells)
    risk = _safe_div(kept_n - kept_s, kept_n)
    total = cells.total
    aurc = _safe_div(np.where(cells.n > 0, cells.n * np.nan_to_num(risk), 0.0).sum(1), total)
    errors = total - cells.right
    optimal = _safe_div(errors - cells.right * (_harmonic(total) - _harmonic(cells.right)), total)
    return aurc, aurc - optimal


def _selective_coverage_rows(cells: _Cells, coverage: float) -> np.ndarray:
    """Accuracy of the most confident ``coverage`` fraction, the boundary tie block taken pro rata."""
    kept_n, kept_s = _accepted(cells)
    target = coverage * cells.total
    rows = np.arange(cells.n.shape[0])
    # The lowest value whose acceptance reaches the target (kept_n falls along the ascending values).
    j = np.maximum((kept_n >= target[:, None] - 1e-9).sum(1) - 1, 0)
    prev_n, prev_s = kept_n[rows, j] - cells.n[rows, j], kept_s[rows, j] - cells.s[rows, j]
    part = np.clip(target - prev_n, 0, None) * _safe_div(cells.s[rows, j], cells.n[rows, j])
    return _safe_div(prev_s + np.nan_to_num(part), target)


def _threshold_rows(cells: _Cells, n_all: np.ndarray, thresholds: Sequence[float]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Release's table: accuracy over items with c >= t, coverage = that count / all items (missing too)."""
    j = np.searchsorted(_micro(cells.values), _micro(np.asarray(thresholds, dtype=np.float64)), side="left")
    kept_n, kept_s = cells.total[:, None] - cells.pn[:, j], cells.right[:, None] - cells.ps[:, j]
    return _safe_div(kept_s, kept_n), _safe_div(kept_n, n_all[:, None])


def _calibration_rows(cells: _Cells, n_all: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All calibration metrics for every row; ``n_all`` counts items including those without confidence."""
    out = {
        "confidence_rate": _safe_div(cells.total, n_all),
        "accuracy_with_confidence": _safe_div(cells.right, cells.total),
        "mean_confidence": _safe_div(cells.n @ cells.values, cells.total),
        "ece_10": _ece_rows(cells, 10, "canonical"),
        "ece_15": _ece_rows(cells, 15, "canonical"),
        "ece_release": _ece_rows(cells, 10, "release"),
        "ece_equal_mass": _ece_rows(cells, 10, "equal_mass"),
        "ece_unique": _ece_rows(cells, 10, "unique"),
        "mce_10": _mce_rows(cells, 10, 1),
        **_brier_rows(cells),
        "auroc": _auroc_rows(cells),
    }
    out["nll"], out["nll_clipped_fraction"] = _nll_rows(cells, NLL_EPS)
    out["aurc"], out["e_aurc"] = _aurc_rows(cells)
    for k in COVERAGES:
        out[f"selective_accuracy_cov{round(k * 100)}"] = _selective_coverage_rows(cells, k)
    acc, cov = _threshold_rows(cells, n_all, THRESHOLDS)
    return out, {"accuracy": acc, "coverage": cov}


# ------------------------------------------------------------------------------------- public point metrics
def _scalar(x: np.ndarray) -> float:
    return float(x[0])


def accuracy(predictions: Sequence[str | None], truths: Sequence[str]) -> float:
    """Fraction of predictions equal to the truth; an unparsed prediction (None) is wrong, never dropped."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions but {len(truths)} truths")
    if not truths:
        return float("nan")
    return float(np.mean([p is not None and p == t for p, t in zip(predictions, truths)]))


def _label_indices(predictions: Sequence[str | None], truths: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer labels over the strings seen; None maps to one extra class that no truth has ("unknown")."""
    vocab = {t: i for i, t in enumerate(dict.fromkeys(list(truths) + [p for p in predictions if p is not None]))}
    unknown = len(vocab)
    pred = np.array([unknown if p is None else vocab[p] for p in predictions], dtype=np.int64)
    return pred, np.array([vocab[t] for t in truths], dtype=np.int64), unknown + 1


def _weighted_f1_rows(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> np.ndarray:
    """Support-weighted F1 per row of label matrices (rows = resamples): sum_l support_l * F1_l / N.

    F1_l = 2 tp / (2 tp + fp + fn) = 2 tp / (support_l + predicted_l), which is sklearn's definition (0 when a
    label is never predicted). Labels absent from the truths (such as "unknown") carry zero weight.
    """
    rows, width = pred.shape
    offset = n_labels * np.arange(rows)[:, None]
    size = rows * n_labels
    support = np.bincount((truth + offset).ravel(), minlength=size).reshape(rows, n_labels)
    predicted = np.bincount((pred + offset).ravel(), minlength=size).reshape(rows, n_labels)
    tp = np.bincount((truth + offset).ravel(), weights=(pred == truth).ravel(), minlength=size)
    f1 = _safe_div(2 * tp.reshape(rows, n_labels), support + predicted)
    return _safe_div((support * np.nan_to_num(f1)).sum(1), np.full(rows, float(width)))


def weighted_f1(predictions: Sequence[str | None], truths: Sequence[str]) -> float:
    """sklearn's ``f1_score(average="weighted")``; None counts as its own wrong class, as the release's
    "unknown" does (it lowers the recall of the true class and is itself weighted zero)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions but {len(truths)} truths")
    if not truths:
        return float("nan")
    pred, truth, n_labels = _label_indices(predictions, truths)
    return _scalar(_weighted_f1_rows(pred[None], truth[None], n_labels))


def _cells(confidences: Any, correct: Any) -> _Cells | None:
    c, y = _check(confidences, correct)
    return _Cells.of(c, y) if len(c) else None


def ece(confidences: Any, correct: Any, n_bins: int = 10, scheme: str = "canonical") -> float:
    """Expected calibration error, sum_bins (|B|/N) |acc(B) - conf(B)|.

    ``scheme``: "canonical" (equal-width, integer binning described in the module docstring), "release"
    (the release: ``np.linspace`` float edges, ``lo <= c < hi``, c == 1.0 in no bin but in N; applied to the
    float64 values, as the release parses text into Python floats), "equal_mass" (``n_bins`` bins of about N/M
    items that never split a block of equal confidences), "unique" (one bin per distinct value; ``n_bins`` unused).
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if scheme not in ECE_SCHEMES:
        raise ValueError(f"unknown ECE scheme {scheme!r}; choose one of {ECE_SCHEMES}")
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_ece_rows(cells, int(n_bins), scheme))


def mce(confidences: Any, correct: Any, n_bins: int = 10, min_count: int = 1) -> float:
    """Maximum |acc - conf| over canonical bins holding at least ``min_count`` items (noisy for sparse bins)."""
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_mce_rows(cells, int(n_bins), int(min_count)))


def brier(confidences: Any, correct: Any) -> float:
    """Mean squared difference between confidence and correctness."""
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_brier_rows(cells)["brier"])


def brier_decomposition(confidences: Any, correct: Any) -> dict[str, float]:
    """Murphy's Brier = reliability - resolution + uncertainty, over distinct confidence values (exact).

    Brier falls with accuracy alone (through uncertainty = a(1-a)); resolution is what rewards confidences that
    separate easy items from hard ones, so compare models of different accuracy on it.
    """
    cells = _cells(confidences, correct)
    if cells is None:
        return dict.fromkeys(("brier", "brier_reliability", "brier_resolution", "brier_uncertainty"), float("nan"))
    return {k: _scalar(v) for k, v in _brier_rows(cells).items()}


def nll(confidences: Any, correct: Any, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood of correctness under the confidence, confidences clipped to [eps, 1-eps].

    Undefined at 0 and 1 without clipping; the default 0.005 moves no two-decimal value other than 0 and 1
    (the fraction clipped is reported by :func:`evaluate_items`). A diagnostic: a few confident errors dominate.
    """
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_nll_rows(cells, eps)[0])


def auroc(confidences: Any, correct: Any) -> float:
    """Failure-prediction AUROC: P(confidence of a correct item > that of a wrong one), ties count half.

    NaN when every item is correct or every item is wrong. Invariant to monotone recalibration, so it measures
    discrimination, which post-hoc scaling cannot improve.
    """
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_auroc_rows(cells))


def aurc(confidences: Any, correct: Any) -> float:
    """Area under the risk-coverage curve, tie-aware; see :func:`_aurc_rows` for the exact rule."""
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_aurc_rows(cells)[0])


def e_aurc(confidences: Any, correct: Any) -> float:
    """AURC minus the best AURC achievable at the same accuracy (0 for a perfect ranking)."""
    cells = _cells(confidences, correct)
    return float("nan") if cells is None else _scalar(_aurc_rows(cells)[1])


def aurc_optimal(n_correct: int, n_wrong: int) -> float:
    """The exact AURC of a perfect ranking: (1/N) sum_{i=1..E} i / (C + i)."""
    total = n_correct + n_wrong
    if total == 0:
        return float("nan")
    return float(sum(i / (n_correct + i) for i in range(1, n_wrong + 1)) / total)


def risk_coverage_curve(confidences: Any, correct: Any) -> dict[str, list[float]]:
    """Points (threshold, coverage, selective risk) accepting items with c >= threshold, highest first.

    One point per distinct confidence, since tied items cannot be separated by a threshold.
    """
    cells = _cells(confidences, correct)
    if cells is None:
        return {"threshold": [], "coverage": [], "risk": []}
    kept_n, kept_s = (x[0, ::-1] for x in _accepted(cells))
    return {"threshold": cells.values[::-1].tolist(), "coverage": (kept_n / cells.total[0]).tolist(),
            "risk": ((kept_n - kept_s) / kept_n).tolist()}


def selective_accuracy(confidences: Any, correct: Any, coverages: Sequence[float] = COVERAGES) -> dict[float, float]:
    """Accuracy of the most confident fraction of items at each coverage; the tie block straddling the cut is
    taken pro rata (the expected accuracy under a random order inside the block)."""
    cells = _cells(confidences, correct)
    return {float(k): float("nan") if cells is None else _scalar(_selective_coverage_rows(cells, float(k)))
            for k in coverages}


def selective_at_thresholds(confidences: Any, correct: Any, thresholds: Sequence[float] = THRESHOLDS,
                            n_total: int | None = None) -> dict[str, list[float]]:
    """The release's table: accuracy over items with c >= t and coverage = their share of ``n_total`` items
    (default: all given items; the release also counts items with no confidence). Accuracy is NaN, not the
    release's 0, where no item is kept. Thresholds compare at 1e-6 resolution, so 0.3 keeps c = 0.3."""
    c, y = _check(confidences, correct)
    total = np.array([float(len(c) if n_total is None else n_total)])
    cells = _Cells.of(c, y)
    acc, cov = _threshold_rows(cells, total, thresholds)
    return {"threshold": [float(t) for t in thresholds], "accuracy": acc[0].tolist(), "coverage": cov[0].tolist()}


def wilson_interval(k: np.ndarray | float, n: np.ndarray | float, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes in n trials (sensible at small n and at 0 or n successes)."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return np.clip(centre - half, 0, p), np.clip(centre + half, p, 1)


def reliability_table(confidences: Any, correct: Any, n_bins: int | None = None) -> dict[str, list[float]]:
    """Points of a reliability diagram: per canonical bin (``n_bins``) or per distinct value (None).

    Each point: mean confidence, accuracy, count and a 95% Wilson interval on the accuracy. Empty bins are left
    out; sparse ones keep their counts so they are not over-read.
    """
    keys_out = ("confidence", "accuracy", "count", "lower", "upper")
    cells = _cells(confidences, correct)
    if cells is None:
        return {k: [] for k in keys_out}
    run_q, run_edges = cells.runs
    if n_bins is not None:
        run_edges = run_edges[np.searchsorted(_bins(run_q, int(n_bins)), np.arange(int(n_bins) + 1))]
    nb, sb, qb = (x[0] for x in cells.range_sums(run_edges))
    keep = nb > 0
    nb, sb, qb = nb[keep], sb[keep], qb[keep]
    lo, hi = wilson_interval(sb, nb)
    return dict(zip(keys_out, ((qb / SCALE / nb).tolist(), (sb / nb).tolist(), nb.astype(int).tolist(),
                               lo.tolist(), hi.tolist())))


# ------------------------------------------------------------------------------ aggregation and bootstrap
PAPER_METRICS = ("accuracy", "weighted_f1", "ece_10", "ece_release", "brier", "auroc")
_CHUNK = 250  # bootstrap rows processed at once: bounds memory at ~100 MB for 8k items


def task_order(names: Sequence[str]) -> list[str]:
    """Distinct task names grouped in ``GROUPS`` order, the release's TASK_ORDER inside a group, then by name."""
    def key(t: str) -> tuple[int, int, str]:
        rank = VECBENCH_TASKS.index(t) if t in VECBENCH_TASKS else len(VECBENCH_TASKS)
        return GROUPS.index(get_task(t).group), rank, t
    return sorted(set(names), key=key)


class _Items:
    """Items sorted by task (then cluster), with label codes; tasks occupy contiguous column ranges."""

    def __init__(self, tasks, predictions, truths, confidences, clusters):
        n = len(tasks)
        for name, seq in (("predictions", predictions), ("truths", truths), ("confidences", confidences),
                          ("clusters", clusters)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries but tasks has {n}; pass one per item")
        names = [get_task(t).name for t in tasks]
        self.tasks = task_order(names)
        code = {t: i for i, t in enumerate(self.tasks)}
        tcode = np.array([code[t] for t in names], dtype=np.int64)
        if clusters is not None:
            ccode = np.unique(np.array([str(c) for c in clusters]), return_inverse=True)[1]
            order = np.lexsort((ccode, tcode))
            self.clusters = ccode[order]
        else:
            order = np.argsort(tcode, kind="stable")
            self.clusters = None
        conf = _confidences(confidences, allow_missing=True)
        self.conf = conf[order]
        pred, truth, self.n_labels = _label_indices([predictions[i] for i in order], [truths[i] for i in order])
        self.pred, self.truth = pred, truth
        self.correct = (pred == truth).astype(np.float64)
        self.bounds = np.searchsorted(tcode[order], np.arange(len(self.tasks) + 1))

    def span(self, tasks: Sequence[str]) -> tuple[int, int]:
        idx = [self.tasks.index(t) for t in tasks]
        return int(self.bounds[min(idx)]), int(self.bounds[max(idx) + 1])

    def resample(self, n_bootstrap: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """(n_bootstrap, N) item indices drawn within each task, whole records at a time when every record of the
        task has the same number of samples (a cluster bootstrap); items otherwise."""
        blocks, unequal = [], []
        for t, a, b in zip(self.tasks, self.bounds[:-1], self.bounds[1:]):
            sizes = None
            if self.clusters is not None:
                c = self.clusters[a:b]
                sizes = np.diff(np.flatnonzero(np.r_[True, c[1:] != c[:-1], True]))
            if sizes is not None and (sizes == sizes[0]).all():
                members = np.arange(a, b).reshape(-1, int(sizes[0]))
                draws = rng.integers(0, len(members), size=(n_bootstrap, len(members)))
                blocks.append(members[draws].reshape(n_bootstrap, -1))
            else:
                if sizes is not None:
                    unequal.append(t)
                blocks.append(rng.integers(a, b, size=(n_bootstrap, b - a)))
        if self.clusters is None:
            unit = "item"
        elif unequal:
            unit = f"record, but item in {', '.join(unequal)} (unequal samples per record)"
        else:
            unit = "record"
        return np.hstack(blocks), unit

    def rows(self, idx: np.ndarray, a: int, b: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every metric for each row of ``idx`` (item indices inside [a, b))."""
        local = idx - a
        conf = self.conf[a:b]
        has = ~np.isnan(conf)
        values, inv = np.unique(conf[has], return_inverse=True)
        u = len(values)
        uid = np.full(b - a, u, dtype=np.int64)
        uid[has] = inv
        rows = idx.shape[0]
        keys = (uid[local] + (u + 1) * np.arange(rows)[:, None]).ravel()
        n = np.bincount(keys, minlength=rows * (u + 1)).reshape(rows, u + 1).astype(np.float64)
        s = np.bincount(keys, weights=self.correct[a:b][local].ravel(), minlength=rows * (u + 1)).reshape(rows, -1)
        n_all = n.sum(1)
        out = {"n": n_all, "n_missing_confidence": n[:, u], "accuracy": _safe_div(s.sum(1), n_all),
               "weighted_f1": _weighted_f1_rows(self.pred[a:b][local], self.truth[a:b][local], self.n_labels)}
        if u == 0:
            empty = np.full(rows, np.nan)
            nan_thr = np.full((rows, len(THRESHOLDS)), np.nan)
            cal = {m: empty for m in METRICS if m not in out}
            cal["confidence_rate"] = np.zeros(rows)
            return {**out, **cal}, {"accuracy": nan_thr, "coverage": np.zeros((rows, len(THRESHOLDS)))}
        cal, thr = _calibration_rows(_Cells(values, n[:, :u], s[:, :u]), n_all)
        return {**out, **cal}, thr


def _nanmean(stack: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=0)


def _interval(x: np.ndarray, level: float) -> list[float | None]:
    x = x[~np.isnan(x)]
    if not len(x):
        return [None, None]
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def _json_number(v: Any) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


class _Unit:
    """Point values and bootstrap draws of every metric for one task, group or the whole set."""

    def __init__(self, point: dict[str, np.ndarray], boot: dict[str, np.ndarray] | None,
                 thr_point: dict[str, np.ndarray] | None = None, thr_boot: dict[str, np.ndarray] | None = None):
        self.point, self.boot, self.thr_point, self.thr_boot = point, boot, thr_point, thr_boot

    @staticmethod
    def mean(units: list[_Unit], names: Sequence[str]) -> _Unit:
        point = {m: _nanmean(np.stack([u.point[m] for u in units])) for m in names}
        boot = None if units[0].boot is None else {m: _nanmean(np.stack([u.boot[m] for u in units])) for m in names}
        return _Unit(point, boot)

    def block(self, names: Sequence[str], level: float) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": {m: int(self.point[m][0]) if m in COUNT_METRICS
                                           else _json_number(self.point[m][0]) for m in names}}
        if self.boot is not None:
            out["ci"] = {m: _interval(self.boot[m], level) for m in names if m not in COUNT_METRICS}
        if self.thr_point is not None:
            table: dict[str, Any] = {"threshold": list(THRESHOLDS)}
            for key in ("accuracy", "coverage"):
                table[key] = [_json_number(v) for v in self.thr_point[key][0]]
                if self.thr_boot is not None:
                    table[key + "_ci"] = [_interval(self.thr_boot[key][:, j], level) for j in range(len(THRESHOLDS))]
            out["selective_thresholds"] = table
        return out


def evaluate_items(tasks: Sequence[str], predictions: Sequence[str | None], truths: Sequence[str],
                   confidences: Sequence[float | None], *, clusters: Sequence[Any] | None = None,
                   n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Every metric per task, per group and overall, with percentile bootstrap intervals (JSON-ready; null = NaN).

    ``predictions`` None = no parsable label (wrong, kept in every accuracy denominator); ``confidences``
    None/NaN = no parsable confidence (counted in ``n_missing_confidence``, left out of calibration metrics).
    ``clusters`` (e.g. record ids when K samples per record are scored) makes the bootstrap resample records.

    Groups come in three conventions: ``pooled`` (every metric over the group's items, as the release's script),
    ``macro`` (unweighted mean of the tasks' values; a task where a metric is undefined is left out of that mean)
    and ``paper`` (accuracy and weighted F1 macro, calibration pooled: how the paper's group columns were formed,
    e.g. OOD VER accuracy 50.37 is the mean of its tasks' 29.26, 41.94 and 79.90, while its ECE 12.17 is pooled;
    F1's convention is unstated in the paper and taken like accuracy). Overall adds the same three, with
    ``paper`` accuracy = mean of the groups' paper accuracies (the author's later evaluator).
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    items = _Items(tasks, predictions, truths, confidences, clusters)
    if not len(items.conf):
        raise ValueError("no items to evaluate")
    n_bootstrap = int(n_bootstrap)
    rng = np.random.default_rng(seed)
    boot_unit = "none"
    chunks: list[np.ndarray] = []
    if n_bootstrap > 0:
        matrix, boot_unit = items.resample(n_bootstrap, rng)
        chunks = [matrix[i:i + _CHUNK] for i in range(0, n_bootstrap, _CHUNK)]

    def unit(a: int, b: int) -> _Unit:
        point, thr_point = items.rows(np.arange(a, b)[None], a, b)
        if not chunks:
            return _Unit(point, None, thr_point, None)
        parts = [items.rows(ch[:, a:b], a, b) for ch in chunks]
        boot = {m: np.concatenate([p[0][m] for p in parts]) for m in point}
        thr = {k: np.concatenate([p[1][k] for p in parts]) for k in thr_point}
        return _Unit(point, boot, thr_point, thr)

    names = (*COUNT_METRICS, *METRICS)
    task_units = {t: unit(*items.span([t])) for t in items.tasks}
    out: dict[str, Any] = {"tasks": {}, "groups": {}}
    for t, u in task_units.items():
        out["tasks"][t] = {"group": get_task(t).group, **u.block(names, ci)}

    def conventions(tasks_: list[str], pooled: _Unit, paper_acc: _Unit) -> dict[str, Any]:
        macro = _Unit.mean([task_units[t] for t in tasks_], METRICS)
        macro.point.update({m: pooled.point[m] for m in COUNT_METRICS})
        paper = _Unit({**{m: pooled.point[m] for m in (*COUNT_METRICS, *PAPER_METRICS)},
                       **{m: paper_acc.point[m] for m in ("accuracy", "weighted_f1")}},
                      None if pooled.boot is None else
                      {**pooled.boot, **{m: paper_acc.boot[m] for m in ("accuracy", "weighted_f1")}})
        return {"tasks": tasks_, "pooled": pooled.block(names, ci), "macro": macro.block(names, ci),
                "paper": paper.block((*COUNT_METRICS, *PAPER_METRICS), ci)}

    group_paper: list[_Unit] = []
    for g in GROUPS:
        members = [t for t in items.tasks if get_task(t).group == g]
        if not members:
            continue
        macro_acc = _Unit.mean([task_units[t] for t in members], ("accuracy", "weighted_f1"))
        group_paper.append(macro_acc)
        out["groups"][g] = conventions(members, unit(*items.span(members)), macro_acc)
    overall = unit(0, len(items.conf))
    out["overall"] = conventions(items.tasks, overall, _Unit.mean(group_paper, ("accuracy", "weighted_f1")))
    out["settings"] = {
        "n_bootstrap": n_bootstrap, "seed": seed, "ci_level": ci, "ci_method": "percentile",
        "bootstrap_strata": "task", "bootstrap_unit": boot_unit, "nll_clip": NLL_EPS,
        "coverages": list(COVERAGES), "thresholds": list(THRESHOLDS),
        "ece": "ece_10/ece_15/mce_10: canonical integer binning [k/M,(k+1)/M), last bin closed; ece_release: "
               "the release's 10 float-edged bins, c=1.0 in no bin but in N; ece_equal_mass: 10 tie-preserving "
               "equal-mass bins; ece_unique: one bin per distinct value",
    }
    return out
