"""Metrics against independent references: sklearn, hand-computed values on bin edges, closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, f1_score, roc_auc_score

from emocaliber import metrics as M


def _random(n: int, seed: int, grid: float | None = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 1, n)
    if grid:
        c = np.round(c / grid) * grid
        c = np.round(c, 6)
    y = rng.random(n) < 0.15 + 0.7 * c
    return np.clip(c, 0, 1), y


# ----------------------------------------------------------------------------------------- sklearn references
@pytest.mark.parametrize("grid", [None, 0.05, 0.1])
@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_and_brier_match_sklearn(grid, seed):
    c, y = _random(3000, seed, grid)
    assert M.auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-12)
    assert M.brier(c, y) == pytest.approx(brier_score_loss(y, c), abs=1e-12)
    assert isinstance(M.auroc(c, y), float) and isinstance(M.brier(c, y), float)


def test_weighted_f1_matches_sklearn_with_unknown_class():
    rng = np.random.default_rng(3)
    labels = ["awe", "fear", "joy", "sadness"]
    truths = list(rng.choice(labels[:3], 600))
    preds = [None if rng.random() < 0.1 else str(rng.choice(labels)) for _ in truths]  # "sadness": never true
    expected = f1_score(truths, [p if p is not None else "unknown" for p in preds], average="weighted")
    assert M.weighted_f1(preds, truths) == pytest.approx(expected, abs=1e-12)


def test_accuracy_counts_unparsed_as_wrong():
    assert M.accuracy(["a", None, "b", "c"], ["a", "a", "b", "b"]) == 0.5
    assert math.isnan(M.accuracy([], []))


def test_auroc_nan_with_one_class():
    assert math.isnan(M.auroc([0.2, 0.9, 0.5], [1, 1, 1]))
    assert math.isnan(M.auroc([0.2, 0.9], [0, 0]))


# ------------------------------------------------------------------------------------- ECE on the bin edges
def test_canonical_bins_on_edges_any_dtype():
    c = [0.0, 0.1, 0.3, 0.6, 0.7, 0.9999, 1.0]
    for dtype in (np.float32, np.float64):
        assert M.bin_index(np.array(c, dtype=dtype), 10).tolist() == [0, 1, 3, 6, 7, 9, 9]
    assert M.bin_index(np.array([0.2, 0.4, 0.6, 0.8], dtype=np.float32), 15).tolist() == [3, 6, 9, 12]


# Eight items on the fragile edges: (confidence, correct).
EDGE_ITEMS = [(0.25, 1), (0.3, 0), (0.65, 0), (0.7, 1), (1.0, 1), (1.0, 0), (0.0, 0), (0.6, 1)]


def test_canonical_ece_hand_computed_on_edges():
    c, y = zip(*EDGE_ITEMS)
    # bins: [0.2,0.3) {0.25:1} gap .75 | [0.3,0.4) {0.3:0} gap .3 | [0.6,0.7) {0.6:1, 0.65:0} acc .5 conf .625
    # gap .125 x2 | [0.7,0.8) {0.7:1} gap .3 | [0.9,1.0] {1.0:1, 1.0:0} acc .5 conf 1 gap .5 x2 | [0,0.1) {0:0} 0
    expected = (0.75 + 0.3 + 2 * 0.125 + 0.3 + 2 * 0.5 + 0.0) / 8
    assert M.ece(c, y) == pytest.approx(expected, abs=1e-15)
    assert M.ece(np.array(c, dtype=np.float32), y) == M.ece(np.array(c, dtype=np.float64), y)
    # MCE: largest bin gap (the lone 0.25); with at least two items per bin: the 1.0 bin.
    assert M.mce(c, y) == pytest.approx(0.75)
    assert M.mce(c, y, min_count=2) == pytest.approx(0.5)


def test_release_scheme_misbins_and_drops_one_hand_computed():
    edges = np.linspace(0, 1, 11)
    assert edges[3] > 0.3 and edges[6] > 0.6 and edges[7] > 0.7  # the premise of the release's misbinning
    c, y = zip(*EDGE_ITEMS)
    # Release rule: 0.3 joins 0.25 in bin 2, 0.6 is alone in bin 5, 0.7 joins 0.65 in bin 6, both 1.0 in no bin
    # (still in N = 8), 0.0 in bin 0.
    # bin2 acc .5 conf .275 gap .225 x2 | bin5 {0.6:1} gap .4 | bin6 acc .5 conf .675 gap .175 x2 | bin0 0
    expected = (2 * 0.225 + 0.4 + 2 * 0.175) / 8
    assert M.ece(c, y, scheme="release") == pytest.approx(expected, abs=1e-12)


def test_release_scheme_ignores_full_confidence():
    c, y = [1.0, 1.0, 1.0, 0.5], [0, 0, 0, 1]
    assert M.ece(c, y, scheme="release") == pytest.approx(0.5 / 4)        # only the 0.5 item is binned
    assert M.ece(c, y) == pytest.approx((3 * 1.0 + 0.5) / 4)                   # canonical keeps c = 1.0


def test_fifteen_bins_left_closed():
    # 0.2 = 3/15 starts bin 3, where 0.25 also is: one bin, acc .5, conf .225.
    assert M.ece([0.2, 0.25], [1, 0], n_bins=15) == pytest.approx(0.275)
    # 0.19 is in bin 2: two bins, gaps .81 and .25.
    assert M.ece([0.19, 0.25], [1, 0], n_bins=15) == pytest.approx((0.81 + 0.25) / 2)


@pytest.mark.parametrize("scheme,n_bins", [("canonical", 10), ("canonical", 15), ("unique", 10),
                                           ("equal_mass", 10)])
def test_float32_and_float64_give_identical_ece(scheme, n_bins):
    c, y = _random(5000, 7, 0.05)
    assert M.ece(c.astype(np.float32), y, n_bins, scheme) == M.ece(c.astype(np.float64), y, n_bins, scheme)


@pytest.mark.parametrize("scheme", M.ECE_SCHEMES)
@pytest.mark.parametrize("n_bins", [10, 15])
def test_constant_predictor_at_mean_accuracy_has_zero_ece(scheme, n_bins):
    y = np.array([1] * 70 + [0] * 30)
    assert M.ece(np.full(100, 0.7), y, n_bins, scheme) == pytest.approx(0.0, abs=1e-12)
    assert M.ece(np.full(100, 0.7), y, n_bins, scheme) >= 0


def test_equal_mass_never_splits_ties():
    # Six items at 0.5 (3 right) and four at 0.9 (2 right), two bins: a tie-splitting rule would move one 0.5 item
    # into the upper bin. Tie-preserving bins: {0.5 x6} gap 0, {0.9 x4} gap .4.
    c = [0.5] * 6 + [0.9] * 4
    y = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0]
    assert M.ece(c, y, n_bins=2, scheme="equal_mass") == pytest.approx(4 * 0.4 / 10)


def test_equal_mass_with_distinct_values_uses_equal_counts():
    c = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    y = [1, 0, 0, 0, 1, 1, 0, 1]
    # bins {.1,.2} {.3,.4} {.5,.6} {.7,.8}: gaps .35, .35, .45, .25, two items each
    assert M.ece(c, y, n_bins=4, scheme="equal_mass") == pytest.approx((0.35 + 0.35 + 0.45 + 0.25) / 4)


def test_unique_value_ece_hand_computed():
    c, y = [0.3, 0.3, 0.35, 0.35], [1, 0, 0, 0]
    assert M.ece(c, y, scheme="unique") == pytest.approx((2 * 0.2 + 2 * 0.35) / 4)
    assert M.ece(c, y) == pytest.approx(0.325 - 0.25)  # one canonical bin [0.3, 0.4)


def test_ece_matches_a_naive_loop_with_integer_bins():
    c, y = _random(4000, 11, 0.01)
    k = np.minimum(np.round(c * 1e6).astype(np.int64) * 10 // 10**6, 9)
    expected = sum(abs(y[k == b].mean() - c[k == b].mean()) * (k == b).mean() for b in range(10) if (k == b).any())
    assert M.ece(c, y) == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------------------ Brier and NLL
def test_murphy_terms_sum_to_brier():
    for seed, grid in ((0, 0.05), (1, None)):
        c, y = _random(2000, seed, grid)
        d = M.brier_decomposition(c, y)
        assert d["brier_reliability"] - d["brier_resolution"] + d["brier_uncertainty"] == pytest.approx(
            d["brier"], abs=1e-12)
        assert d["brier"] == pytest.approx(brier_score_loss(y, c), abs=1e-12)


def test_murphy_terms_hand_computed():
    d = M.brier_decomposition([0.8, 0.8, 0.2, 0.2], [1, 0, 0, 0])
    assert d["brier"] == pytest.approx((0.04 + 0.64 + 0.04 + 0.04) / 4)
    assert d["brier_reliability"] == pytest.approx((2 * 0.3**2 + 2 * 0.2**2) / 4)
    assert d["brier_resolution"] == pytest.approx((2 * 0.25**2 + 2 * 0.25**2) / 4)
    assert d["brier_uncertainty"] == pytest.approx(0.25 * 0.75)


def test_nll_clips_to_documented_eps():
    c, y = _random(1000, 5, 0.05)
    cc = np.clip(c, 0.005, 0.995)
    expected = -np.mean(y * np.log(cc) + (1 - y) * np.log(1 - cc))
    assert M.nll(c, y) == pytest.approx(expected, abs=1e-12)
    assert M.nll([1.0], [0]) == pytest.approx(-math.log(0.005))


# ---------------------------------------------------------------------------------- selective prediction
def test_aurc_of_perfect_ranking_is_optimal():
    rng = np.random.default_rng(2)
    n_right, n_wrong = 700, 300
    c = np.concatenate([rng.uniform(0.6, 1.0, n_right), rng.uniform(0.0, 0.5, n_wrong)])
    y = np.r_[np.ones(n_right), np.zeros(n_wrong)]
    n, r = n_right + n_wrong, n_wrong / (n_right + n_wrong)
    exact = sum(i / (n_right + i) for i in range(1, n_wrong + 1)) / n  # risk after accepting C + i items
    assert M.aurc(c, y) == pytest.approx(exact, abs=1e-12)
    assert M.aurc_optimal(n_right, n_wrong) == pytest.approx(exact, abs=1e-12)
    # Geifman's continuous optimum r + (1-r) ln(1-r) is below the discrete one by at most r/N.
    continuous = r + (1 - r) * math.log(1 - r)
    assert 0 <= M.aurc(c, y) - continuous <= r / n
    assert M.e_aurc(c, y) == pytest.approx(0.0, abs=1e-12)


def test_aurc_without_ties_is_mean_selective_risk():
    rng = np.random.default_rng(4)
    c = rng.permutation(1000) / 1000
    y = rng.random(1000) < c
    order = np.argsort(-c)
    risks = np.cumsum(1 - y[order]) / np.arange(1, 1001)
    assert M.aurc(c, y) == pytest.approx(risks.mean(), abs=1e-12)
    assert M.e_aurc(c, y) > 0


def test_aurc_ties_are_rejected_together():
    # One confidence for everyone: no threshold separates anything; AURC = error rate, whatever the order.
    assert M.aurc([0.5] * 4, [1, 1, 1, 0]) == pytest.approx(0.25)
    assert M.aurc([0.5] * 4, [0, 1, 1, 1]) == pytest.approx(0.25)
    c, y = _random(500, 9, 0.1)
    perm = np.random.default_rng(0).permutation(500)
    assert M.aurc(c[perm], y[perm]) == M.aurc(c, y)
    assert M.e_aurc(c, y) >= 0


def test_risk_coverage_curve_hand_computed():
    rc = M.risk_coverage_curve([0.9, 0.9, 0.5, 0.1], [1, 0, 1, 0])
    assert rc["threshold"] == [0.9, 0.5, 0.1]
    assert rc["coverage"] == pytest.approx([0.5, 0.75, 1.0])
    assert rc["risk"] == pytest.approx([0.5, 1 / 3, 0.5])


def test_selective_accuracy_at_coverage_splits_boundary_ties_pro_rata():
    out = M.selective_accuracy([0.9, 0.8, 0.8, 0.2], [1, 1, 0, 0], coverages=(0.5, 0.8))
    assert out[0.5] == pytest.approx((1 + 0.5) / 2)   # 0.9 item, then half of the 0.8 block (1 of 2 right)
    assert out[0.8] == pytest.approx(2 / 3.2)         # 0.9 and both 0.8 items, then 0.2 of the wrong 0.2 item


def test_selective_at_release_thresholds_hand_computed():
    out = M.selective_at_thresholds([0.3, 0.29, 0.7, 0.1], [1, 0, 1, 1], thresholds=(0.1, 0.3, 0.8), n_total=5)
    assert out["accuracy"][0] == pytest.approx(0.75) and out["coverage"][0] == pytest.approx(0.8)
    assert out["accuracy"][1] == pytest.approx(1.0) and out["coverage"][1] == pytest.approx(0.4)  # keeps c = 0.3
    assert math.isnan(out["accuracy"][2]) and out["coverage"][2] == 0.0


def test_wilson_interval_known_values():
    lo, hi = M.wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = M.wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))


def test_reliability_table_unique_and_binned():
    t = M.reliability_table([0.3, 0.3, 0.35, 1.0], [1, 0, 0, 1])
    assert t["confidence"] == pytest.approx([0.3, 0.35, 1.0]) and t["count"] == [2, 1, 1]
    assert t["accuracy"] == pytest.approx([0.5, 0.0, 1.0])
    b = M.reliability_table([0.3, 0.3, 0.35, 1.0], [1, 0, 0, 1], n_bins=10)
    assert b["count"] == [3, 1] and b["accuracy"] == pytest.approx([1 / 3, 1.0])


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("conf,correct,match", [
    ([0.5, 0.6], [1], "entries"),
    ([0.5, 1.2], [1, 0], r"confidences\[1\]"),
    ([0.5, float("nan")], [1, 0], "finite"),
    ([0.5, -0.1], [1, 0], r"\[0, 1\]"),
    ([0.5, 0.6], [1, 2], r"correct\[1\]"),
])
def test_bad_input_is_a_clear_value_error(conf, correct, match):
    for fn in (M.ece, M.brier, M.auroc, M.aurc):
        with pytest.raises(ValueError, match=match):
            fn(conf, correct)


def test_unknown_scheme_and_empty_input():
    with pytest.raises(ValueError, match="scheme"):
        M.ece([0.5], [1], scheme="quantile")
    assert math.isnan(M.ece([], [])) and math.isnan(M.brier([], [])) and math.isnan(M.aurc([], []))


# ---------------------------------------------------------------------------------- aggregation and bootstrap
def _three_task_example():
    # ID VER: FI-8 4 items (3 right, all at 0.9), EmoSet-8 2 items (1 right, both 0.5).
    # OOD VER: Abstract-8 2 items: one right at 0.8, one unparsed (label None, confidence None).
    tasks = ["FI-8"] * 4 + ["EmoSet-8"] * 2 + ["Abstract-8"] * 2
    truths = ["awe"] * 8
    preds = ["awe", "awe", "awe", "fear", "awe", "fear", "awe", None]
    conf = [0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.8, None]
    return tasks, preds, truths, conf


def test_group_conventions_on_hand_made_example():
    out = M.evaluate_items(*_three_task_example(), n_bootstrap=0)
    json.dumps(out, allow_nan=False)
    ver = out["groups"]["ID VER"]
    assert ver["tasks"] == ["EmoSet-8", "FI-8"]  # the release's TASK_ORDER inside a group
    assert ver["paper"]["metrics"]["accuracy"] == pytest.approx((0.75 + 0.5) / 2)
    assert ver["pooled"]["metrics"]["accuracy"] == pytest.approx(4 / 6)
    # pooled ECE: bin 9 (4 items, acc .75, conf .9) gap .15 x4; bin 5 (acc .5, conf .5) gap 0 -> .6/6
    assert ver["pooled"]["metrics"]["ece_10"] == pytest.approx(0.1)
    assert ver["paper"]["metrics"]["ece_10"] == pytest.approx(0.1)
    assert ver["macro"]["metrics"]["ece_10"] == pytest.approx((0.15 + 0.0) / 2)
    ood = out["groups"]["OOD VER"]
    assert ood["pooled"]["metrics"]["accuracy"] == pytest.approx(0.5)  # the unparsed item stays in the denominator
    assert ood["pooled"]["metrics"]["n"] == 2 and ood["pooled"]["metrics"]["n_missing_confidence"] == 1
    assert ood["pooled"]["metrics"]["ece_10"] == pytest.approx(0.2)   # one calibrated item: |1 - 0.8|
    assert ood["pooled"]["metrics"]["confidence_rate"] == pytest.approx(0.5)
    overall = out["overall"]
    assert overall["pooled"]["metrics"]["accuracy"] == pytest.approx(5 / 8)
    assert overall["macro"]["metrics"]["accuracy"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert overall["paper"]["metrics"]["accuracy"] == pytest.approx((0.625 + 0.5) / 2)
    assert list(out["groups"]) == ["ID VER", "OOD VER"]
    assert out["tasks"]["Abstract-8"]["metrics"]["n_missing_confidence"] == 1


def test_vectorised_rows_match_per_resample_references():
    c, y = _random(600, 13, 0.05)
    conf = [None if i % 17 == 0 else float(v) for i, v in enumerate(c)]
    truths = ["awe"] * 600
    preds = ["awe" if k else ("fear" if i % 3 else None) for i, k in enumerate(y)]
    items = M._Items(["FI-8"] * 600, preds, truths, conf, None)
    idx = np.random.default_rng(0).integers(0, 600, size=(20, 600))
    rows, _ = items.rows(idx, 0, 600)
    for b in range(20):
        sel = idx[b]
        cb = items.conf[sel]
        has = ~np.isnan(cb)
        yb = items.correct[sel]
        assert rows["accuracy"][b] == pytest.approx(yb.mean(), abs=1e-12)
        pb = [None if items.pred[i] == items.n_labels - 1 else str(items.pred[i]) for i in sel]
        assert rows["weighted_f1"][b] == pytest.approx(
            f1_score([str(t) for t in items.truth[sel]], [p if p else "unknown" for p in pb], average="weighted"),
            abs=1e-12)
        assert rows["auroc"][b] == pytest.approx(roc_auc_score(yb[has], cb[has]), abs=1e-12)
        assert rows["brier"][b] == pytest.approx(brier_score_loss(yb[has], cb[has]), abs=1e-12)
        k = np.minimum(np.round(cb[has] * 1e6).astype(np.int64) // 10**5, 9)
        naive = sum(abs(yb[has][k == m].sum() - cb[has][k == m].sum()) for m in range(10)) / has.sum()
        assert rows["ece_10"][b] == pytest.approx(naive, abs=1e-12)
        assert rows["n_missing_confidence"][b] == (~has).sum()


def _miscalibrated(n: int, seed: int):
    rng = np.random.default_rng(seed)
    c = np.round(rng.uniform(0.5, 1.0, n), 2)
    y = rng.random(n) < c - 0.15
    tasks = ["FI-2"] * (n // 2) + ["WebEmo-2"] * (n - n // 2)
    return tasks, ["positive" if k else "negative" for k in y], ["positive"] * n, list(c)


def test_bootstrap_ci_contains_point_and_is_reproducible():
    data = _miscalibrated(2000, 0)
    a = M.evaluate_items(*data, n_bootstrap=300, seed=1)
    b = M.evaluate_items(*data, n_bootstrap=300, seed=1)
    c = M.evaluate_items(*data, n_bootstrap=300, seed=2)
    assert json.dumps(a, allow_nan=False) == json.dumps(b, allow_nan=False)
    assert a["overall"]["pooled"]["ci"] != c["overall"]["pooled"]["ci"]
    full = (*M.PAPER_METRICS, "aurc", "nll", "ece_unique")
    for block, names in ((a["overall"]["pooled"], full), (a["groups"]["ID VSA"]["paper"], M.PAPER_METRICS),
                         (a["tasks"]["FI-2"], full)):
        for name in names:
            lo, hi = block["ci"][name]
            assert lo <= block["metrics"][name] <= hi, name
            assert lo < hi, name


def test_bootstrap_width_matches_binomial_and_cluster_resampling():
    tasks, preds, truths, conf = _miscalibrated(4000, 3)
    p = np.mean([a == t for a, t in zip(preds, truths)])
    out = M.evaluate_items(tasks, preds, truths, conf, n_bootstrap=1000, seed=0)
    lo, hi = out["overall"]["pooled"]["ci"]["accuracy"]
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / 4000), rel=0.15)
    # Two identical samples per record: resampling records gives the width of 4000 items, not of 8000.
    ids = [f"r{i}" for i in range(4000)]
    twice = [x + x for x in (tasks, preds, truths, conf)]
    clustered = M.evaluate_items(*twice, clusters=ids + ids, n_bootstrap=1000, seed=0)
    naive = M.evaluate_items(*twice, n_bootstrap=1000, seed=0)
    assert clustered["settings"]["bootstrap_unit"] == "record"
    w_cluster = np.diff(clustered["overall"]["pooled"]["ci"]["accuracy"])[0]
    w_naive = np.diff(naive["overall"]["pooled"]["ci"]["accuracy"])[0]
    assert w_cluster == pytest.approx(hi - lo, rel=0.15)
    assert w_cluster / w_naive == pytest.approx(math.sqrt(2), rel=0.15)


def test_stratified_bootstrap_keeps_task_sizes():
    # A task that is all right and one that is all wrong: pooled accuracy varies only if the mix varies.
    tasks = ["FI-2"] * 300 + ["WebEmo-2"] * 100
    preds = ["positive"] * 300 + ["negative"] * 100
    out = M.evaluate_items(tasks, preds, ["positive"] * 400, [0.9] * 400, n_bootstrap=200, seed=0)
    assert out["groups"]["ID VSA"]["pooled"]["ci"]["accuracy"] == [0.75, 0.75]


def test_unequal_samples_per_record_fall_back_to_items_and_say_so():
    tasks = ["FI-2"] * 5 + ["WebEmo-2"] * 4
    preds, truths = ["positive"] * 9, ["positive"] * 9
    conf = [0.9] * 9
    clusters = ["a", "a", "b", "c", "c", "d", "d", "e", "e"]  # FI-2 has records of 2, 1 and 2 samples
    out = M.evaluate_items(tasks, preds, truths, conf, clusters=clusters, n_bootstrap=20, seed=0)
    assert out["settings"]["bootstrap_unit"] == "record, but item in FI-2 (unequal samples per record)"


def test_evaluate_items_checks_lengths_and_tasks():
    with pytest.raises(ValueError, match="truths has 1 entries"):
        M.evaluate_items(["FI-2", "FI-2"], ["positive", "negative"], ["positive"], [0.5, 0.5], n_bootstrap=0)
    with pytest.raises(KeyError, match="unknown task"):
        M.evaluate_items(["Nope-3"], ["a"], ["a"], [0.5], n_bootstrap=0)
