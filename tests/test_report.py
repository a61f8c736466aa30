"""The evaluation report end to end: predictions rows -> parse (both modes) -> metrics.json, report.md, PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from emocaliber.report import (
    evaluate_predictions,
    plot_reliability,
    plot_risk_coverage,
    summary_lines,
    write_report,
)
from emocaliber.tasks import get_task

THINK = ("<think><element>a red circle on a dark field</element><human>no people present</human>"
         "<context>a dim, closed backdrop</context><interaction>only the circle in the frame</interaction>"
         "<analysis>the mood is plainly tense</analysis></think>")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def respond(answer: str, confidence: str) -> str:
    return f"{THINK}<answer>{answer}</answer><confidence>{confidence}</confidence>"


def record(task: str, i: int, truth: str, oracle_label: str, oracle_conf: float) -> dict:
    return {"id": f"{task}/{i}", "task": task, "image": f"{task}/{i}.png", "candidates": list(get_task(task).labels),
            "ground_truth": truth, "split": "test", "source": "test",
            "meta": {"oracle_label": oracle_label, "oracle_confidence": oracle_conf}}


def wrong(task: str, truth: str) -> str:
    return next(label for label in get_task(task).labels if label != truth)


def build_rows() -> list:
    """A hand-made predictions file; its expected metrics are written next to each part.

    FI-8 (ID VER): 5 records. 3 right at 0.80, 1 wrong at 0.80, 1 error row (image failed): acc 3/5.
    EmoSet-8 (ID VER): 4 records. right at "85%" (strict 0.85; the release's float() fails -> no confidence),
        right at 0.60, wrong at 0.90, no <answer> and no <confidence>: acc 2/4 in strict mode.
    FI-2 (ID VSA): 4 records, right at 0.70 x3, wrong at 0.30: acc 3/4.
    Abstract-8 (OOD VER): 3 records x 2 samples: sample 0 right, sample 1 wrong, all at 0.50: acc 1/2.
    Oracle: every record answers ground truth at 0.75 except 4 of the 16 records (label wrong): acc 12/16.
    Plus one row without a record (skipped).
    """
    rows = []

    def add(task, i, truth, resp, sample=0, error=None, oracle_right=True):
        rec = record(task, i, truth, truth if oracle_right else wrong(task, truth), 0.75)
        rows.append({"record": rec, "sample": sample, "response": resp, "error": error})

    for i, (ok, conf) in enumerate([(1, "0.80"), (1, "0.80"), (1, "0.80"), (0, "0.80")]):
        add("FI-8", i, "awe", respond("awe" if ok else "fear", conf), oracle_right=i != 0)
    add("FI-8", 4, "awe", None, error="image failed to load: FI-8/4.png", oracle_right=False)
    add("EmoSet-8", 0, "fear", respond("fear", "85%"))
    add("EmoSet-8", 1, "fear", respond("fear", "0.60"))
    add("EmoSet-8", 2, "fear", respond("sadness", "0.90"), oracle_right=False)
    add("EmoSet-8", 3, "fear", THINK + " I would say fear, maybe")
    for i, (ok, conf) in enumerate([(1, "0.70"), (1, "0.70"), (1, "0.70"), (0, "0.30")]):
        add("FI-2", i, "positive", respond("positive" if ok else "negative", conf), oracle_right=i != 3)
    for i in range(3):
        add("Abstract-8", i, "sadness", respond("sadness", "0.50"), sample=0)
        add("Abstract-8", i, "sadness", respond("anger", "0.50"), sample=1)
    rows.append({"sample": 0, "response": "x", "error": None})
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = out / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in build_rows()) + "{not json\n", encoding="utf-8")
    metrics = write_report(path, out, n_bootstrap=50, seed=0)
    return out, metrics


def test_metrics_json_is_strict_json_with_both_modes(report):
    out, metrics = report

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"), parse_constant=no_nan)
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["parse_modes"] == ["strict", "release"]
    assert set(on_disk["modes"]) == {"strict", "release"}
    assert len(on_disk["unreadable_lines"]) == 1


def test_accuracy_denominators_keep_errors_and_unparsed(report):
    r = report[1]["modes"]["strict"]
    tasks = r["tasks"]
    assert tasks["FI-8"]["metrics"]["accuracy"] == pytest.approx(3 / 5)
    assert tasks["FI-8"]["metrics"]["n"] == 5
    assert tasks["FI-8"]["metrics"]["n_missing_confidence"] == 1
    assert tasks["EmoSet-8"]["metrics"]["accuracy"] == pytest.approx(2 / 4)
    assert tasks["FI-2"]["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert tasks["Abstract-8"]["metrics"]["accuracy"] == pytest.approx(1 / 2)
    ver = r["groups"]["ID VER"]
    assert ver["paper"]["metrics"]["accuracy"] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert ver["pooled"]["metrics"]["accuracy"] == pytest.approx(5 / 9)
    assert r["error_reasons"] == {"image failed to load": 1}
    assert r["skipped_rows"]["n"] == 1 and "missing field" in r["skipped_rows"]["first"][0]
    assert r["overall"]["parse"]["n_error_rows"] == 1
    assert r["overall"]["parse"]["n_rows"] == 19
    assert r["n_records"] == 16 and r["samples_per_record"] == {"1": 13, "2": 3}


def test_calibration_excludes_missing_confidence_hand_computed(report):
    r = report[1]["modes"]["strict"]
    # FI-2: bin 7 {0.7 x3, all right} gap .3 x3; bin 3 {0.3, wrong} gap .3 -> ECE .3
    assert r["tasks"]["FI-2"]["metrics"]["ece_10"] == pytest.approx(0.3)
    # ID VER pooled over the 7 items with a confidence: FI-8 four at 0.8 (3 right); EmoSet-8 0.85 right,
    # 0.60 right, 0.90 wrong. Bins: [0.8,0.9) {0.8 x4, 0.85}: 4 right, conf 4.05 -> gap |4 - 4.05| = .05;
    # [0.6,0.7) {0.6 right} .4; [0.9,1] {0.9 wrong} .9 -> (0.05 + 0.4 + 0.9) / 7
    ver = r["groups"]["ID VER"]["pooled"]["metrics"]
    assert ver["ece_10"] == pytest.approx((0.05 + 0.4 + 0.9) / 7)
    assert ver["n_missing_confidence"] == 2
    # Brier over the same 7 items, by hand.
    sq = [0.2**2] * 3 + [0.8**2] + [0.15**2, 0.4**2, 0.9**2]
    assert ver["brier"] == pytest.approx(sum(sq) / 7)


def test_parse_mode_changes_what_is_read(report):
    strict, release = report[1]["modes"]["strict"], report[1]["modes"]["release"]
    # "85%" is a confidence for strict parsing only.
    assert strict["tasks"]["EmoSet-8"]["metrics"]["n_missing_confidence"] == 1
    assert release["tasks"]["EmoSet-8"]["metrics"]["n_missing_confidence"] == 2
    # Without <answer>, the release scans the whole lower-cased response: the first candidate found wins.
    # THINK contains no EmoSet-8 label, the tail "I would say fear" does: right under the release's rule.
    assert release["tasks"]["EmoSet-8"]["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert strict["overall"]["parse"]["label_parse_rate"] == pytest.approx(17 / 19)


def test_oracle_block(report):
    r = report[1]["modes"]["strict"]
    o = r["oracle"]
    assert o["n_records"] == 16
    assert o["overall"]["pooled"]["metrics"]["accuracy"] == pytest.approx(12 / 16)
    assert o["overall"]["pooled"]["metrics"]["ece_10"] == pytest.approx(0.0, abs=1e-12)  # 0.75 stated, 0.75 right


def test_per_sample_spread_and_bootstrap_unit(report):
    r = report[1]["modes"]["strict"]
    assert r["per_sample"]["sample"] == [0, 1]
    # sample 1 exists only for Abstract-8, where it is always wrong
    assert r["per_sample"]["accuracy"][1] == 0.0
    assert r["settings"]["bootstrap_unit"] == "record"


def test_report_markdown_tables(report):
    out, _ = report
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Parse mode: strict" in md and "## Parse mode: release" in md
    assert "paper convention" in md and "pooled convention" in md
    assert "| Task | Acc | wF1 | N |" in md
    assert "| FI-8 | 60.00 [" in md              # ×100, two decimals, with its interval
    assert "| Group | Acc | wF1 | ECE | ECE release rule | Brier | AUROC | N |" in md
    assert "| FI-2 | 4 | 0 | 100.00 | 100.00 | 100.00 |" in md  # parse-rate row
    for f in report[1]["plots"]:
        assert f"]({f})" in md


def test_plots_are_valid_pngs(report):
    out, metrics = report
    expected = {"reliability_id_vsa.png", "reliability_id_ver.png", "reliability_ood_ver.png", "risk_coverage.png",
                "confidence_hist.png"}
    assert set(metrics["plots"]) == expected
    for name in expected:
        _check_png(out / name)


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, (path, len(data))
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert 500 <= w <= 3000 and 300 <= h <= 3000, (path, im.size)


def test_plot_reliability_compares_several_models(tmp_path):
    rng = np.random.default_rng(0)
    curves = {}
    for name, shift in (("stage 2", 0.2), ("stage 3", 0.05), ("oracle", 0.0)):
        c = np.round(rng.uniform(0.3, 1.0, 400), 2)
        curves[name] = (list(c), list(rng.random(400) < c - shift))
    curves["no confidence"] = ([None, None], [True, False])
    path = plot_reliability(curves, tmp_path / "compare.png", "Stage 2 vs stage 3 vs oracle")
    _check_png(path)


def test_same_seed_same_bytes(report, tmp_path):
    out, _ = report
    write_report(out / "predictions.jsonl", tmp_path, n_bootstrap=50, seed=0)
    assert (tmp_path / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    write_report(out / "predictions.jsonl", tmp_path / "other", n_bootstrap=50, seed=1)
    assert (tmp_path / "other" / "metrics.json").read_bytes() != (out / "metrics.json").read_bytes()


def test_summary_lines(report):
    lines = summary_lines(report[1])
    assert 4 <= len(lines) <= 20
    assert any("ID VER" in line and "Acc 55.00" in line for line in lines)  # (60 + 50) / 2
    assert any("oracle" in line for line in lines)
    single = summary_lines(evaluate_predictions(build_rows(), n_bootstrap=0))
    assert single[0].startswith("[strict]")
    assert not any("ECE-rel" in line for line in single)


def test_summary_lines_label_each_ece_by_its_rule(report):
    """The headline ECE is the canonical binning, not the paper's: each is named by its rule, and the release-rules
    summary prints the release's own ECE next to it."""
    metrics = report[1]
    lines = summary_lines(metrics)
    assert not any("as the paper" in line for line in lines)
    for g, b in metrics["modes"]["release"]["groups"].items():
        m = b["paper"]["metrics"]
        (line,) = [x for x in lines if x.startswith(f"[release] {g} ")]
        assert f"ECE10 {100 * m['ece_10']:.2f}" in line and f"ECE-rel {100 * m['ece_release']:.2f}" in line
    assert all("ECE-rel" not in x for x in lines if x.startswith("[strict]"))
    assert any(x.startswith("(ECE-rel: the release script's rule") for x in lines)


def test_evaluate_predictions_rejects_empty_and_bad_mode():
    with pytest.raises(ValueError, match="no scorable"):
        evaluate_predictions([{"nothing": 1}], n_bootstrap=0)
    with pytest.raises(ValueError, match="parse mode"):
        evaluate_predictions(build_rows(), parse_mode="lenient", n_bootstrap=0)


def test_duplicate_rows_are_skipped_not_double_counted():
    rows = build_rows()
    rows.append(rows[0])
    r = evaluate_predictions(rows, n_bootstrap=0)
    assert r["tasks"]["FI-8"]["metrics"]["n"] == 5
    assert any("duplicate" in s for s in r["skipped_rows"]["first"])


def test_error_reasons_count_kinds_not_record_ids():
    rows = build_rows()
    for i, rid in enumerate(["gone/0", "it's", "gone/2"]):
        rec = {**record("FI-2", 10 + i, "positive", "positive", 0.5), "id": rid}
        rows.append({"record": rec, "sample": 0, "response": None,
                     "error": f"record {rid!r}: image not found: /data/{i}.png; check --image-root"})
    rows.append({"record": {**record("FI-2", 20, "positive", "positive", 0.5), "id": "up"}, "sample": 0,
                 "response": None, "error": "record 'up': image path '../x.png' escapes the dataset root"})
    r = evaluate_predictions(rows, n_bootstrap=0)
    assert r["error_reasons"] == {"image not found": 3, "image failed to load": 1,
                                  "image path … escapes the dataset root": 1}


def test_risk_coverage_labels_a_group_without_confidences_so_the_legend_never_comes_up_empty(tmp_path, recwarn):
    # A model before stage 2 states no confidence: its group must say so rather than vanish from the legend,
    # which would then hold nothing (matplotlib warns about that).
    only_missing = plot_risk_coverage({"ID VSA": ([None, None], [1, 0])}, tmp_path / "none.png")
    _check_png(only_missing)
    assert not [w for w in recwarn if "legend" in str(w.message)]
