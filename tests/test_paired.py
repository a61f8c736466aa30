"""Stage against stage on the same images (emocaliber.paired): the paired intervals and the words for them. A
change is called significant only when its interval excludes the null; anything else is "no significant change"."""

from __future__ import annotations

import json

import pytest

from emocaliber import paired
from emocaliber.metrics import auroc, brier, ece
from emocaliber.records import REASONING_PARTS


@pytest.mark.parametrize("name, low, high, expected", [
    ("ece_ratio", 1.05, 1.4, "significantly worse"),
    ("ece_ratio", 0.5, 0.9, "significantly better"),
    ("ece_ratio", 0.8, 1.1, "no significant change"),
    ("brier_diff", 0.001, 0.02, "significantly worse"),
    ("brier_diff", -0.02, -0.001, "significantly better"),
    ("brier_diff", -0.01, 0.01, "no significant change"),
    ("auroc_diff", 0.01, 0.05, "significantly better"),
    ("auroc_diff", -0.05, -0.01, "significantly worse"),
    ("auroc_diff", -0.02, 0.03, "no significant change"),
    ("auroc_diff", 0.0, 0.03, "no significant change"),  # touching the null does not exclude it
    ("ece_ratio", None, None, "not measured"),
    ("auroc_diff", float("nan"), 0.1, "not measured"),
])
def test_the_verdict_follows_the_interval(name, low, high, expected):
    assert paired.verdict(name, low, high) == expected


def _scored(rows: list[tuple[str, float, bool]], group: str = "Synth VSA") -> dict:
    return {(rid, 0): (group, conf, float(right)) for rid, conf, right in rows}


RIGHT = [i % 3 != 0 for i in range(90)]  # two in three right
FLAT = _scored([(f"r{i}", 0.88 + 0.01 * (i % 5), r) for i, r in enumerate(RIGHT)])  # overconfident, hardly any ranking
SHARP = _scored([(f"r{i}", 0.95 if r else 0.10, r) for i, r in enumerate(RIGHT)])  # right ranked above wrong
HARMFUL = _scored([(f"r{i}", 0.99, r) for i, r in enumerate(RIGHT)])  # one overconfident value for everything


def test_an_improvement_is_significantly_better_and_says_so():
    out = paired.compare(FLAT, SHARP, n_resamples=300)["Synth VSA"]
    assert out["n"] == 90
    assert {n: out[n]["verdict"] for n in paired.STATISTICS} == {
        "ece_ratio": "significantly better", "brier_diff": "significantly better", "auroc_diff": "significantly better"}
    c0, c1 = [FLAT[k][1] for k in sorted(FLAT)], [SHARP[k][1] for k in sorted(SHARP)]
    y = [FLAT[k][2] for k in sorted(FLAT)]
    assert out["brier_diff"]["point"] == pytest.approx(brier(c1, y) - brier(c0, y))
    assert out["auroc_diff"]["point"] == pytest.approx(auroc(c1, y) - auroc(c0, y))
    assert out["ece_ratio"]["point"] == pytest.approx(ece(c1, y) / ece(c0, y))
    assert out["auroc_diff"]["low"] > 0 and out["brier_diff"]["high"] < 0 and out["ece_ratio"]["high"] < 1
    assert paired.summary("Synth VSA", out) == (
        "Synth VSA: stage 3 is significantly better than stage 2 in ECE, Brier score and AUROC.")


def test_a_harmful_change_is_significantly_worse_and_says_so():
    out = paired.compare(FLAT, HARMFUL, n_resamples=300)["Synth VSA"]
    assert out["ece_ratio"]["verdict"] == "significantly worse" and out["ece_ratio"]["low"] > 1
    assert out["brier_diff"]["verdict"] == "significantly worse" and out["brier_diff"]["low"] > 0
    # A constant confidence has no ranking at all (AUROC 0.5), against the flat model's slight one.
    text = paired.summary("Synth VSA", out)
    assert text.startswith("Synth VSA: stage 3 is significantly worse than stage 2 in ECE and Brier score")


def test_no_change_is_printed_as_no_significant_change():
    same = paired.compare(FLAT, FLAT, n_resamples=100)["Synth VSA"]
    assert same["ece_ratio"]["point"] == pytest.approx(1.0) and same["auroc_diff"]["point"] == 0.0
    assert {n: same[n]["verdict"] for n in paired.STATISTICS} == dict.fromkeys(paired.STATISTICS,
                                                                              "no significant change")
    assert paired.summary("Synth VSA", same) == (
        "Synth VSA: no significant change from stage 2 in ECE, Brier score or AUROC.")
    # Noise on a few images: the point estimate moves, the interval straddles the null, the words stay the same.
    nudged = {**FLAT, ("r1", 0): ("Synth VSA", 0.70, 1.0), ("r3", 0): ("Synth VSA", 0.75, 0.0)}
    out = paired.compare(FLAT, nudged, n_resamples=300)["Synth VSA"]
    assert out["brier_diff"]["point"] != 0
    assert out["brier_diff"]["low"] < 0 < out["brier_diff"]["high"]
    assert out["brier_diff"]["verdict"] == "no significant change"


def test_a_group_without_shared_images_is_not_measured():
    out = paired.compare(FLAT, _scored([("other", 0.5, True)]), n_resamples=10, groups=["Synth VSA", "Synth VER"])
    assert out["Synth VSA"]["n"] == 0 and out["Synth VER"]["n"] == 0
    assert all(out["Synth VER"][n]["verdict"] == "not measured" for n in paired.STATISTICS)
    assert paired.summary("Synth VER", out["Synth VER"]).startswith("Synth VER: not measured")


def test_the_markdown_carries_every_interval_and_verdict():
    comparison = paired.compare(FLAT, SHARP, n_resamples=50)
    text = "\n".join(paired.markdown(comparison, 50))
    entry = comparison["Synth VSA"]
    assert f"x{entry['ece_ratio']['point']:.2f} [{entry['ece_ratio']['low']:.2f}, " in text
    assert "significantly better" in text and "over 50 resamples" in text


def _write_predictions(path, rows: list[tuple[str, str, float]]) -> None:
    """A predictions file with one SynthEmo-2 (VSA) prediction per (id, answer, confidence); truth positive."""
    think = "<think>" + "".join(f"<{p}>x</{p}>" for p in REASONING_PARTS) + "</think>"
    with open(path, "w") as f:
        for rid, answer, conf in rows:
            record = {"id": rid, "task": "SynthEmo-2", "candidates": ["positive", "negative"],
                      "ground_truth": "positive"}
            response = f"{think}<answer>{answer}</answer><confidence>{conf:.2f}</confidence>"
            f.write(json.dumps({"record": record, "response": response, "sample": 0, "error": None}) + "\n")


def test_predictions_files_are_compared_on_the_images_both_answered(tmp_path):
    answers = ["positive" if i % 3 else "negative" for i in range(60)]
    stage2 = [(f"r{i}", a, 0.60 + 0.01 * (i % 5)) for i, a in enumerate(answers)]
    stage3 = [(f"r{i}", a, 0.80 if a == "positive" else 0.40) for i, a in enumerate(answers)]
    _write_predictions(tmp_path / "s2.jsonl", stage2 + [("only-in-stage-2", "positive", 0.5)])
    _write_predictions(tmp_path / "s3.jsonl", stage3)
    out = paired.compare_predictions(tmp_path / "s2.jsonl", tmp_path / "s3.jsonl", 200)
    assert list(out) == ["Synth VSA"] and out["Synth VSA"]["n"] == 60
    right = [a == "positive" for a in answers]
    assert out["Synth VSA"]["auroc_diff"]["point"] == pytest.approx(1.0 - auroc([c for *_, c in stage2], right))
    assert out["Synth VSA"]["auroc_diff"]["verdict"] == "significantly better"


def test_compare_command_reads_evaluation_directories_and_refuses_unrelated_ones(tmp_path, capsys):
    answers = ["positive" if i % 3 else "negative" for i in range(60)]
    for name, conf in (("a", lambda a: 0.7), ("b", lambda a: 0.9 if a == "positive" else 0.3)):
        (tmp_path / name).mkdir()
        _write_predictions(tmp_path / name / "predictions.jsonl", [(f"r{i}", a, conf(a)) for i, a in enumerate(answers)])
    assert paired.main([str(tmp_path / "a"), str(tmp_path / "b"), "--n-resamples", "100", "--before-name", "plain",
                        "--after-name", "ranked", "--out", str(tmp_path / "cmp.json")]) == 0
    printed = capsys.readouterr().out
    assert "AUROC ranked - plain" in printed and "Synth VSA: ranked is significantly better" in printed
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["groups"]["Synth VSA"]["n"] == 60
    _write_predictions(tmp_path / "other.jsonl", [("x1", "positive", 0.5)])
    with pytest.raises(SystemExit) as e:
        paired.main([str(tmp_path / "a"), str(tmp_path / "other.jsonl")])
    assert e.value.code == 1 and "share no image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired.main([str(tmp_path / "a"), str(tmp_path / "missing")])
    assert "no predictions.jsonl there" in capsys.readouterr().err
