"""EmoNet-Face metrics against independent computations (scikit-learn, scipy, krippendorff, and the release
notebook's pandas code re-typed here), and the ordering of annotators of known quality."""

import warnings

import krippendorff
import numpy as np
import pandas as pd
import pytest
from emonet_fixtures import human_ratings, latent, write_hq
from scipy.stats import mannwhitneyu, spearmanr
from sklearn.metrics import cohen_kappa_score

from emocaliber.emonet import metrics as m
from emocaliber.emonet.data import load_hq

TOL = 1e-12


def _sk_kappa(a, b):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cohen_kappa_score(np.asarray(a).astype(int), np.asarray(b).astype(int), weights="quadratic",
                                     labels=list(range(8)))
    except ValueError:
        return np.nan


def test_weighted_kappa_equals_sklearn_with_the_release_truncation():
    rng = np.random.default_rng(0)
    n_nan = 0
    for t in range(400):
        n = int(rng.integers(2, 80))
        a = rng.uniform(-1.5, 8.5, n)  # continuous and out-of-range values, as some model rows hold
        b = np.clip(a + rng.normal(0, 1.5, n), -1, 9) if t % 2 else rng.integers(0, 8, n).astype(float)
        if t % 17 == 0:
            b = np.full(n, 3.0)
        ours, ref = m.weighted_kappa(a, b), _sk_kappa(a, b)
        if np.isnan(ref):
            assert np.isnan(ours)
            n_nan += 1
        else:
            assert abs(ours - ref) < TOL
    assert m.weighted_kappa([2, 2, 5], [2, 2, 5]) == 1.0
    assert np.isnan(m.weighted_kappa([3, 3], [3, 3]))  # undefined, as scikit-learn's NaN


def test_alpha_equals_the_krippendorff_package():
    rng = np.random.default_rng(1)
    for _ in range(100):
        data = rng.integers(0, 8, (int(rng.integers(2, 9)), int(rng.integers(5, 60)))).astype(float)
        data[rng.random(data.shape) < 0.5] = np.nan
        ref = krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
        assert abs(m.krippendorff_interval(data) - ref) < TOL


def test_mann_whitney_equals_scipy_and_the_notebook_bootstrap():
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.3, 0.2, 120), rng.normal(0.35, 0.2, 300)
    got = m.could_be_annotator(x, y, n_boot=200, seed=42)
    assert abs(got["p_value"] - mannwhitneyu(x, y, alternative="two-sided").pvalue) < TOL
    gen = np.random.default_rng(42)  # the notebook's loop, re-typed
    boots = [np.nanmean(gen.choice(x, size=len(x), replace=True)) - np.nanmean(gen.choice(y, size=len(y),
                                                                                          replace=True))
             for _ in range(200)]
    np.testing.assert_allclose(got["ci"], np.percentile(boots, [2.5, 97.5]), rtol=0, atol=TOL)
    assert got["could_be_annotator"] == (got["p_value"] > 0.05)


def _notebook(path):
    """The release notebook's long format, pivot, model-vs-human kappa and Spearman-vs-median, re-typed."""
    import ast

    df = pd.read_csv(path)
    df["annotations"] = df["annotations"].apply(ast.literal_eval)
    emotion_list = [e for e in df["annotations"].iloc[0] if not e.startswith("Extra Dimensions|")]
    long = [{"image": r.image, "annotator": r.annotator, "human": r.human, "emotion": e,
             "rating": r.annotations.get(e, 0)} for r in df.itertuples() for e in emotion_list]
    df_long = pd.DataFrame(long)
    humans = df_long[df_long["human"]]["annotator"].unique()
    pivot = df_long.pivot_table(index=["emotion", "image"], columns="annotator", values="rating")
    kappa, rho = {}, {}
    for e in emotion_list:
        er = pivot.loc[e]
        ks = []
        for h in humans:
            pair = er[["model", h]].dropna()
            if len(pair) >= 2:
                ks.append(_sk_kappa(pair["model"], pair[h]))
        kappa[e] = np.nanmean(ks) if ks else np.nan
        med = er[list(humans)].median(axis=1)
        idx = er["model"].dropna().index.intersection(med.dropna().index)
        rho[e] = spearmanr(er["model"].loc[idx], med.loc[idx])[0] if len(idx) >= 2 else np.nan
    return emotion_list, kappa, rho


def test_agreement_and_spearman_equal_the_notebook_on_a_generated_file(tmp_path):
    lat = latent(40, seed=4)
    ratings = human_ratings(lat, seed=5)
    model = np.clip(lat + np.random.default_rng(6).normal(0, 1.5, lat.shape), 0, 7)
    path = write_hq(tmp_path / "hq.csv", ratings, models={"model": model})
    data = load_hq(path)
    a = data.annotators.index("model")
    ref = m.HumanReference(data.ratings[data.humans], np.ones(8, bool), [data.annotators[h] for h in data.humans],
                           n_boot=0)
    got = ref.score(data.ratings[a])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emotion_list, kappa, rho = _notebook(path)
    for j, key in enumerate(emotion_list):
        for ours, theirs in ((got["per_emotion"]["kappa"][j], kappa[key]), (got["per_emotion"]["spearman"][j],
                                                                           rho[key])):
            assert (np.isnan(ours) and np.isnan(theirs)) or abs(ours - theirs) < TOL


@pytest.fixture(scope="module")
def four_annotators():
    lat = latent(150, seed=7)
    ratings = human_ratings(lat, seed=8)
    rng = np.random.default_rng(9)
    annotators = {"truth": lat, "noisy": np.clip(lat + rng.normal(0, 2.0, lat.shape), 0, 7),
                  "constant": np.full(lat.shape, 3.0), "random": rng.uniform(0, 7, lat.shape)}
    ref = m.HumanReference(ratings, np.ones(8, bool), [f"human-{i + 1}" for i in range(8)], n_boot=30)
    return {k: ref.score(v, v / 7) for k, v in annotators.items()}, ref


def test_annotators_of_known_quality_come_out_in_order(four_annotators):
    s, _ = four_annotators

    def kappa(k):
        return s[k]["kappa"]["mean"]

    def rho(k):
        return s[k]["spearman"]["mean"]

    def auroc(k):
        return s[k]["calibration"]["present_ge1/all"]["auroc"]["value"]

    for metric in (kappa, rho, auroc):
        assert metric("truth") > metric("noisy") + 0.05
        chance = [metric(k) for k in ("constant", "random") if not np.isnan(metric(k))]
        assert all(metric("noisy") > c + 0.1 for c in chance)
    # Chance level: the constant annotator is exactly at it (its Spearman is undefined, and counted so), the
    # random one near it.
    assert auroc("constant") == 0.5 and kappa("constant") == pytest.approx(0, abs=1e-12)
    assert np.isnan(rho("constant")) and s["constant"]["spearman"]["n_undefined"] == 40
    assert abs(kappa("random")) < 0.05 and abs(rho("random")) < 0.05 and abs(auroc("random") - 0.5) < 0.05


def test_bootstrap_intervals_repeat_with_the_seed(four_annotators):
    s, ref = four_annotators
    again = ref.score(np.clip(latent(150, seed=7), 0, 7), latent(150, seed=7) / 7)
    assert again["spearman"]["ci"] == s["truth"]["spearman"]["ci"]
    assert again["calibration"] == s["truth"]["calibration"]


def test_quantile_intensity_takes_the_human_distribution_and_keeps_the_order():
    rng = np.random.default_rng(3)
    p, median = rng.random((50, 2)), rng.integers(0, 8, (50, 2)).astype(float)
    q = m.quantile_intensity(p, median)
    for e in range(2):
        assert sorted(q[:, e]) == sorted(median[:, e])
        order = np.argsort(p[:, e])
        assert np.all(np.diff(q[order, e]) >= 0)
