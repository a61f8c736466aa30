"""EmoNet-Face agreement metrics, computed as the release's ``statistics/analysis-hq.ipynb`` computes them,
plus the calibration view this project adds.

Release protocol (a model is scored as one more annotator):

* **Quadratic weighted kappa** per (annotator pair, emotion) over the images both rated (at least 2), ratings
  cast with ``astype(int)`` (truncation toward zero: 6.93 -> 6, -0.4 -> 0) and ``labels=range(8)``, so a pair
  with a value outside 0..7 is left out, as scikit-learn's confusion matrix does. Undefined -> NaN.
* **Agreement** of a model per emotion: the mean kappa against each human; of a human: against every other
  human. ``average_all_emotions`` is the mean over emotions (NaN skipped).
* **Could-be-an-annotator test**: the model's kappas against every (human, emotion) vs the human-human kappas
  of every (h1 < h2, emotion); mean difference with a bootstrap CI (each list resampled, 1,000 times,
  ``default_rng(42)`` per annotator), two-sided Mann-Whitney U, "yes" when p > 0.05.
* **Spearman** per emotion between the model and the per-image human median, averaged over emotions; the CI
  bootstraps the per-emotion values (1,000 resamples, seed 42). The notebook draws every model's bootstrap
  from one shared generator, so a model's CI there depends on the models before it; here each annotator gets
  ``default_rng(seed)`` of its own, so its CI is reproducible alone.
* **Krippendorff's alpha** (interval) per emotion among humans, annotators with more than one rating kept;
  CI by resampling images (one generator across emotions, as in the notebook).

Kappa and alpha are implemented here in numpy (tested against scikit-learn and the ``krippendorff`` package);
Spearman and Mann-Whitney call scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_LABELS = 8


def weighted_kappa(r1: np.ndarray, r2: np.ndarray, n_labels: int = N_LABELS) -> float:
    """``cohen_kappa_score(r1.astype(int), r2.astype(int), weights='quadratic', labels=range(n_labels))``."""
    a = np.trunc(np.asarray(r1, dtype=np.float64))
    b = np.trunc(np.asarray(r2, dtype=np.float64))
    keep = (a >= 0) & (a < n_labels) & (b >= 0) & (b < n_labels)
    if not keep.any():
        return float("nan")
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    confusion = np.bincount(a * n_labels + b, minlength=n_labels * n_labels).reshape(n_labels, n_labels)
    confusion = confusion.astype(np.float64)
    expected = np.outer(confusion.sum(axis=0), confusion.sum(axis=1)) / confusion.sum()
    grid = np.arange(n_labels, dtype=np.float64)
    w = (grid[None, :] - grid[:, None]) ** 2
    denominator = float((w * expected).sum())
    if denominator == 0:
        return float("nan")
    return float(1 - (w * confusion).sum() / denominator)


def pair_kappas(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kappa per emotion between two annotators' (images, emotions) ratings, over the images both rated;
    NaN where fewer than two are shared (the notebook skips those pairs)."""
    out = np.full(x.shape[1], np.nan)
    for e in range(x.shape[1]):
        both = ~np.isnan(x[:, e]) & ~np.isnan(y[:, e])
        if both.sum() >= 2:
            out[e] = weighted_kappa(x[both, e], y[both, e])
    return out


def kappa_against_humans(ratings: np.ndarray, human: np.ndarray) -> np.ndarray:
    """``K[a, h, e]``: kappa of annotator ``a`` against human ``h`` per emotion (NaN on the diagonal, for
    non-human ``h`` and where undefined)."""
    n_a, _, n_e = ratings.shape
    k = np.full((n_a, n_a, n_e), np.nan)
    humans = np.flatnonzero(human)
    for h in humans:
        for a in range(n_a):
            if a == h:
                continue
            if human[a] and a < h and not np.isnan(k[h, a]).all():
                k[a, h] = k[h, a]
                continue
            k[a, h] = pair_kappas(ratings[a], ratings[h])
    return k


def agreement(k: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Per-annotator, per-emotion agreement: mean kappa against the humans (other humans for a human)."""
    humans = np.flatnonzero(human)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            return np.nanmean(k[:, humans, :], axis=1)


def nanmean(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def model_human_kappas(k: np.ndarray, a: int, humans: Sequence[int]) -> np.ndarray:
    """The notebook's ``mh_kappas``: annotator ``a`` against each human (file order), each emotion; NaN out."""
    v = np.concatenate([k[a, h] for h in humans if h != a]) if len(humans) else np.array([])
    return v[~np.isnan(v)]


def human_human_kappas(k: np.ndarray, humans: Sequence[int], names: Sequence[str],
                       exclude: int | None = None) -> np.ndarray:
    """The notebook's ``get_hh_kappas``: every human pair with ``name1 < name2`` (string order, humans in file
    order), each emotion, optionally without one human; NaN out."""
    parts = [k[h1, h2] for h1 in humans if h1 != exclude for h2 in humans
             if h2 != exclude and names[h1] < names[h2]]
    v = np.concatenate(parts) if parts else np.array([])
    return v[~np.isnan(v)]


def mannwhitney_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (scipy's default method), NaN with fewer than two values a side."""
    from scipy.stats import mannwhitneyu

    if len(x) < 2 or len(y) < 2:
        return float("nan")
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def could_be_annotator(own: np.ndarray, reference: np.ndarray, n_boot: int = 1000, seed: int = 42) -> dict:
    """The notebook's test: mean difference, its bootstrap CI (the two lists resampled in turn from one
    generator), the Mann-Whitney p-value and "yes" if p > 0.05."""
    diff = float(np.mean(own) - np.mean(reference)) if len(own) and len(reference) else float("nan")
    ci: list[float | None] = [None, None]
    if n_boot and len(own) and len(reference):
        rng = np.random.default_rng(seed)
        boots = np.empty(n_boot)
        for b in range(n_boot):
            x = rng.choice(own, size=len(own), replace=True)
            y = rng.choice(reference, size=len(reference), replace=True)
            boots[b] = np.nanmean(x) - np.nanmean(y)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        ci = [float(lo), float(hi)]
    p = mannwhitney_p(own, reference)
    return {"mean_difference": diff, "ci": ci, "p_value": p, "n": [len(own), len(reference)],
            "could_be_annotator": bool(p > 0.05) if not np.isnan(p) else False}


def human_median(ratings: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Per image and emotion, the median of the human ratings present (NaN where no human rated)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(ratings[np.flatnonzero(human)], axis=0)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """``scipy.stats.spearmanr`` over the positions where both are present; NaN with fewer than 2 or a
    constant side (scipy's own NaN, without its warning)."""
    from scipy.stats import spearmanr

    both = ~np.isnan(x) & ~np.isnan(y)
    if both.sum() < 2 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return float("nan")
    return float(spearmanr(x[both], y[both]).statistic)


def spearman_per_emotion(model: np.ndarray, median: np.ndarray) -> np.ndarray:
    """rho per emotion between a model's (images, emotions) scores and the human median."""
    return np.array([spearman(model[:, e], median[:, e]) for e in range(model.shape[1])])


def bootstrap_mean(values: np.ndarray, n_boot: int = 1000, seed: int = 42) -> list[float | None]:
    """Percentile 95% CI of the mean of the non-NaN ``values`` (the notebook's bootstrap over emotions)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) < 2 or not n_boot:
        return [None, None]
    rng = np.random.default_rng(seed)
    boots = [rng.choice(v, size=len(v), replace=True).mean() for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return [float(lo), float(hi)]


def krippendorff_interval(data: np.ndarray) -> float:
    """Krippendorff's alpha, interval level, of an (annotators, items) array with NaN for missing values.

    alpha = 1 - (n - 1) * sum_u [sum_{i!=j in u} (v_i - v_j)^2 / (m_u - 1)] / sum_{i!=j} (v_i - v_j)^2 over the
    n pairable values (items with at least two values); each double sum is 2 (m S2 - S1^2).
    """
    d = np.asarray(data, dtype=np.float64)
    present = ~np.isnan(d)
    m = present.sum(axis=0)
    pairable = m >= 2
    if not pairable.any():
        return float("nan")
    v = np.where(present, d, 0.0)[:, pairable]
    m = m[pairable].astype(np.float64)
    s1, s2 = v.sum(axis=0), (v * v).sum(axis=0)
    n = m.sum()
    within = (2 * (m * s2 - s1 * s1) / (m - 1)).sum()
    total = 2 * (n * s2.sum() - s1.sum() ** 2)
    if total == 0:
        return float("nan")
    return float(1 - (n - 1) * within / total)


def alpha_per_emotion(ratings: np.ndarray, human: np.ndarray, n_boot: int = 1000, seed: int = 42
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Alpha among humans per emotion and its bootstrap CI over images, ``(alpha[E], ci[E, 2])``, with the
    notebook's rules (annotators with more than one rating; one generator across emotions)."""
    humans = ratings[np.flatnonzero(human)]
    n_e = ratings.shape[2]
    alpha, ci = np.full(n_e, np.nan), np.full((n_e, 2), np.nan)
    rng = np.random.default_rng(seed)
    for e in range(n_e):
        data = humans[:, :, e]
        data = data[(~np.isnan(data)).sum(axis=1) > 1]
        if len(data) < 2:
            continue
        alpha[e] = krippendorff_interval(data)
        if n_boot:
            n_items = data.shape[1]
            boots = np.array([krippendorff_interval(data[:, rng.choice(n_items, size=n_items, replace=True)])
                              for _ in range(n_boot)])
            boots = boots[~np.isnan(boots)]
            if len(boots):
                ci[e] = np.percentile(boots, [2.5, 97.5])
    return alpha, ci


# ---------------------------------------------------------------------------------------------------------------
# One model scored against the human reference (release metrics + calibration).

RELIABLE_ALPHA = 0.3
PRESENT_THRESHOLDS = (1, 2)


class HumanReference:
    """What every scored annotator is compared with, computed once: the human-human kappas, Krippendorff's
    alpha, the per-image human median, and the reliable emotions (alpha >= 0.3)."""

    def __init__(self, ratings: np.ndarray, human: np.ndarray, names: Sequence[str], n_boot: int = 1000,
                 seed: int = 42, alpha_boot: int | None = None) -> None:
        self.humans = list(np.flatnonzero(human))
        self.names = list(names)
        self.ratings = ratings[self.humans]              # (H, I, E)
        hmask = np.ones(len(self.humans), dtype=bool)
        self.k = kappa_against_humans(self.ratings, hmask)
        local = list(range(len(self.humans)))
        hnames = [self.names[h] for h in self.humans]
        self.hh = human_human_kappas(self.k, local, hnames)
        self.agreement = agreement(self.k, hmask)          # (H, E): each human against the others
        self.alpha, self.alpha_ci = alpha_per_emotion(self.ratings, hmask, n_boot if alpha_boot is None
                                                      else alpha_boot, seed)
        self.median = human_median(self.ratings, hmask)    # (I, E)
        self.reliable = self.alpha >= RELIABLE_ALPHA       # NaN alpha -> not reliable
        self.n_boot, self.seed = n_boot, seed

    def score(self, intensity: np.ndarray, p_present: np.ndarray | None = None) -> dict:
        """Release metrics of one annotator's (images, emotions) intensities, and calibration of its
        P(present) when given."""
        n_e = intensity.shape[1]
        k = np.stack([pair_kappas(intensity, self.ratings[h]) for h in range(len(self.humans))])  # (H, E)
        per_emotion_kappa = agreement(k[None], np.ones(len(self.humans), dtype=bool))[0]
        mh = k.reshape(-1)
        mh = mh[~np.isnan(mh)]
        rho = spearman_per_emotion(intensity, self.median)
        out = {
            "kappa": {"mean": nanmean(per_emotion_kappa),
                      "reliable_mean": nanmean(per_emotion_kappa[self.reliable]),
                      "human_human_mean": nanmean(self.hh),
                      "could_be_annotator": could_be_annotator(mh, self.hh, self.n_boot, self.seed)},
            "spearman": {"mean": nanmean(rho), "ci": bootstrap_mean(rho, self.n_boot, self.seed),
                         "reliable_mean": nanmean(rho[self.reliable]),
                         "n_undefined": int(np.isnan(rho).sum())},
            "per_emotion": {"kappa": per_emotion_kappa.tolist(), "spearman": rho.tolist()},
            "n_emotions": n_e,
        }
        if p_present is not None:
            out["calibration"] = self.calibration(p_present)
            out["per_emotion"]["auroc_present_ge1"] = [
                _auroc_cells(p_present[:, e], self.median[:, e] >= 1) for e in range(n_e)]
        return out

    def calibration(self, p: np.ndarray, n_bins: int = 10) -> dict:
        """ECE, Brier and AUROC of P(present) against the binarised human median (>= 1 and >= 2), over all
        emotions and the reliable ones, with percentile bootstrap CIs over images."""
        out = {}
        for t in PRESENT_THRESHOLDS:
            y = self.median >= t
            for subset, cols in (("all", np.ones(p.shape[1], dtype=bool)), ("reliable", self.reliable)):
                out[f"present_ge{t}/{subset}"] = calibration_block(p[:, cols], y[:, cols], self.n_boot,
                                                                   self.seed, n_bins)
        return out


def _auroc_cells(p: np.ndarray, y: np.ndarray) -> float:
    from emocaliber.metrics import auroc

    keep = ~np.isnan(p)
    return auroc(p[keep], y[keep]) if keep.any() else float("nan")


def calibration_block(p: np.ndarray, y: np.ndarray, n_boot: int, seed: int, n_bins: int = 10) -> dict:
    """ECE (the project's canonical bins), Brier and AUROC of P(present) ``p`` (images, emotions; NaN cells
    left out) against ``y``; CIs resample images."""
    from emocaliber.metrics import auroc, brier, ece

    def values(rows: np.ndarray) -> tuple[float, float, float]:
        pp, yy = p[rows].reshape(-1), y[rows].reshape(-1)
        keep = ~np.isnan(pp)
        pp, yy = pp[keep], yy[keep]
        if not len(pp):
            return float("nan"), float("nan"), float("nan")
        return ece(pp, yy, n_bins), brier(pp, yy), auroc(pp, yy)

    n_images = p.shape[0]
    point = values(np.arange(n_images))
    block: dict = {"n_cells": int((~np.isnan(p)).sum()), "n_emotions": int(p.shape[1]),
                   "prevalence": float(y[~np.isnan(p)].mean()) if (~np.isnan(p)).any() else None}
    boots = None
    if n_boot and n_images > 1 and p.size:
        rng = np.random.default_rng(seed)
        boots = np.array([values(rng.integers(0, n_images, n_images)) for _ in range(n_boot)])
    for j, name in enumerate(("ece", "brier", "auroc")):
        ci = [None, None]
        if boots is not None:
            col = boots[:, j][~np.isnan(boots[:, j])]
            if len(col):
                ci = [float(x) for x in np.percentile(col, [2.5, 97.5])]
        block[name] = {"value": _num(point[j]), "ci": ci}
    return block


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def quantile_intensity(p: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Per emotion, map the model's P ranks onto the empirical distribution of the human medians (the
    third-party "oracle" calibration): it is fitted on the test labels, so a report flags it."""
    out = np.full_like(p, np.nan)
    for e in range(p.shape[1]):
        keep = ~np.isnan(p[:, e]) & ~np.isnan(median[:, e])
        if keep.sum() < 2:
            continue
        target = np.sort(median[keep, e])
        ranks = np.argsort(np.argsort(p[keep, e], kind="stable"), kind="stable")
        out[np.flatnonzero(keep), e] = target[ranks]
    return out
