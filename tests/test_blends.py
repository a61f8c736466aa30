"""Rank-O-ToM pieces: CutMix blends, blend targets, the ranking reward, FlexMatch thresholds, blend-rank metrics.

Expected values are worked by hand in the comments (the issue's acceptance numbers)."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest
from PIL import Image

from emocaliber import synthemo
from emocaliber.blend_rank import (
    collect_triplets,
    mean_gap,
    paired_differences,
    recall_metrics,
    report_markdown,
    soft_ece,
    top_two_hits,
    top_two_records,
    triplet_metrics,
    violation_rate,
)
from emocaliber.blends import BlendSettings, blend_target, cutmix, make_blend, pair_records
from emocaliber.blends import main as blends_main
from emocaliber.pseudo_labels import flexmatch_thresholds, select_pseudo_labels
from emocaliber.records import Record, read_records
from emocaliber.rewards import (
    BlendRankReward,
    calibrated_log_reward,
    calibration_reward_brier,
    soft_rule_score,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _solid(color, size=(4, 4), mode="RGB"):
    return Image.new("RGB", size, color).convert(mode)


def _rows(image: Image.Image) -> list[tuple]:
    """The colour of each row's first pixel, top to bottom."""
    return [image.getpixel((0, y)) for y in range(image.size[1])]


def test_horizontal_cutmix_takes_the_top_rows_from_the_first_image():
    out = cutmix(_solid(RED), _solid(BLUE), 0.5)
    assert _rows(out) == [RED, RED, BLUE, BLUE]
    assert _rows(cutmix(_solid(BLUE), _solid(RED), 0.5)) == [BLUE, BLUE, RED, RED]
    # every pixel of a row is that row's colour
    assert {out.getpixel((x, 1)) for x in range(4)} == {RED} and {out.getpixel((x, 3)) for x in range(4)} == {BLUE}


def test_odd_height_takes_int_of_half_the_rows():
    out = cutmix(_solid(RED, (4, 5)), _solid(BLUE, (4, 5)), 0.5)  # int(5 * 0.5) = 2 rows red, 3 blue
    assert _rows(out) == [RED, RED, BLUE, BLUE, BLUE]


def test_vertical_cut_and_modes_are_kept():
    out = cutmix(_solid(RED, (5, 4)), _solid(BLUE, (5, 4)), 0.4, axis="vertical")  # int(5 * 0.4) = 2 columns
    assert [out.getpixel((x, 0)) for x in range(5)] == [RED, RED, BLUE, BLUE, BLUE]
    for mode in ("L", "RGBA"):
        mixed = cutmix(_solid(RED, mode=mode), _solid(BLUE, mode="RGB"), 0.5)
        assert mixed.mode == mode and mixed.size == (4, 4)
    assert cutmix(_solid(RED, (4, 4)), _solid(BLUE, (8, 6)), 0.5).size == (4, 4)  # resized to the first


def _records(labels):
    return [Record(id=f"r{i}", task="SynthEmo-8", image=f"i{i}.png", candidates=list(synthemo.EMOTIONS),
                   ground_truth=label, split="test", source="synthemo") for i, label in enumerate(labels)]


def test_pairs_skip_same_labels_and_are_deterministic():
    records = _records(["awe", "awe", "fear", "anger", "awe", "fear"])
    pairs = pair_records(records, 5, seed=3)
    assert pairs and all(a.ground_truth != b.ground_truth for a, b in pairs)
    assert [(a.id, b.id) for a, b in pairs] == [(a.id, b.id) for a, b in pair_records(records, 5, seed=3)]
    assert pair_records(_records(["awe", "awe", "awe"]), 5, seed=0) == []  # one label: nothing to blend


def test_blend_record_carries_its_provenance_and_shares():
    a, b = _records(["awe", "fear"])
    record, image = make_blend(a, b, _solid(RED, (4, 5)), _solid(BLUE, (4, 5)), BlendSettings(), random.Random(0),
                               "blends")
    info = record.meta["blend"]
    assert info["sources"] == ["r0", "r1"] and info["labels"] == ["awe", "fear"] and info["axis"] == "horizontal"
    top = RED if info["first"] == 0 else BLUE
    assert _rows(image)[0] == top
    # the first part has 2 of 5 rows: its source's share is 0.4, the other's 0.6
    first_share = info["shares"][info["first"]]
    assert first_share == pytest.approx(0.4) and sum(info["shares"]) == pytest.approx(1.0)
    assert record.ground_truth == info["labels"][int(np.argmax(info["shares"]))]


def test_blend_target_counts_either_source_with_its_share():
    info = {"labels": ["awe", "fear"], "shares": [0.5, 0.5]}
    assert blend_target("Fear", info) == (True, 0.5)
    assert blend_target("anger", info) == (False, 0.0)
    assert blend_target(None, info) == (False, 0.0)


def _response(label: str, c: float | None) -> str:
    think = "".join(f"<{p}>x</{p}>" for p in ("element", "human", "context", "interaction", "analysis"))
    conf = f"<confidence>{c:.2f}</confidence>" if c is not None else ""
    return f"<think>{think}</think><answer>{label}</answer>{conf}"


def test_soft_target_score_is_best_at_the_share():
    grid = np.linspace(0.01, 0.99, 99)
    for rule in ("log", "brier", "spherical"):
        best = grid[np.argmax(soft_rule_score(rule, grid, 0.5))]
        assert best == pytest.approx(0.5, abs=0.011)
    # binary targets give the plain rule
    assert soft_rule_score("brier", 0.8, 1.0) == pytest.approx(-(0.2**2))


def test_calibration_reward_on_a_blend_uses_the_named_sources_share():
    blend = {"labels": ["awe", "fear"], "shares": [0.5, 0.5], "sources": ["a", "b"]}
    cands = list(synthemo.EMOTIONS)
    comps = [_response("fear", 0.5), _response("fear", 0.9), _response("anger", 0.5)]
    brier = calibration_reward_brier(comps, ground_truth=["awe"] * 3, candidates=[cands] * 3, blend=[blend] * 3)
    # target 0.5: -(0.5*(0.5-1)^2 + 0.5*0.5^2) = -0.25; c=0.9: -(0.5*0.01 + 0.5*0.81) = -0.41; wrong: target 0
    assert brier == pytest.approx([-0.25, -0.41, -0.25])
    total = calibrated_log_reward(comps, ground_truth=["awe"] * 3, candidates=[cands] * 3, blend=[blend] * 3)
    assert total[0] > total[1] and total[0] - total[2] >= 1.0 - 1e-9  # naming a source is correct


def test_rank_hinge_hand_worked_values():
    reward = BlendRankReward(weight=1.0, delta=0.1, table={"a": 0.8, "b": 0.6})
    blend = {"sources": ["a", "b"], "labels": ["awe", "fear"], "shares": [0.5, 0.5]}
    out = reward([_response("awe", 0.9), _response("awe", 0.4)], candidates=[list(synthemo.EMOTIONS)] * 2,
                 id=["x", "x"], blend=[blend, blend])
    # c=0.9: max(0, 0.9-0.8+0.1) + max(0, 0.9-0.6+0.1) = 0.2 + 0.4 = 0.6 ; c=0.4: both hinges 0
    assert out == pytest.approx([-0.6, 0.0])


def test_rank_reward_prefers_the_same_batch_and_refreshes_its_table():
    reward = BlendRankReward(weight=1.0, delta=0.1, table={"a": 0.2, "b": 0.2})
    blend = {"sources": ["a", "b"], "labels": ["awe", "fear"], "shares": [0.5, 0.5]}
    cands = [list(synthemo.EMOTIONS)] * 4
    out = reward([_response("awe", 0.9), _response("awe", 0.7), _response("fear", 0.8), _response("awe", 0.5)],
                 candidates=cands, id=["a", "a", "b", "x"], blend=[None, None, None, blend])
    # a: mean(0.9, 0.7) = 0.8 from this batch; b: 0.8; c=0.5 is 0.3 below both: no penalty (the stale table's
    # 0.2 would have cost 2 * 0.4)
    assert out == pytest.approx([0.0, 0.0, 0.0, 0.0])
    assert reward.table == pytest.approx({"a": 0.8, "b": 0.8})


def test_rank_reward_missing_confidence_is_the_worst_value_and_unknown_sources_are_counted():
    reward = BlendRankReward(weight=0.5, delta=0.1)
    blend = {"sources": ["a", "b"], "labels": ["awe", "fear"], "shares": [0.5, 0.5]}
    out = reward(["<answer>awe</answer>", _response("awe", 0.5), "garbage", None], id=["x", "x", "c", "d"],
                 blend=[blend, blend, None, None], candidates=[list(synthemo.EMOTIONS)] * 4)
    assert out[0] == pytest.approx(-0.5 * 2 * 1.1) and out[1:] == [0.0, 0.0, 0.0]
    assert reward.missing_sources == 1 and all(math.isfinite(v) for v in out)


def test_rank_reward_is_monotone_in_the_blend_confidence():
    reward = BlendRankReward(weight=1.0, delta=0.1, table={"a": 0.6, "b": 0.6})
    blend = {"sources": ["a", "b"], "labels": ["awe", "fear"], "shares": [0.5, 0.5]}
    cs = np.linspace(0.0, 1.0, 21)
    out = reward([_response("awe", c) for c in cs], id=["x"] * 21, blend=[blend] * 21,
                 candidates=[list(synthemo.EMOTIONS)] * 21)
    assert all(x >= y for x, y in itertools.pairwise(out))


def test_flexmatch_thresholds_hand_worked():
    # 7 classes; class 0 has 4 confident images, class 1 has 2, class 2 none above tau; 2 images unused
    labels = [0, 0, 0, 0, 1, 1, 2, 3]
    conf = [0.99, 0.97, 0.96, 0.99, 0.98, 0.99, 0.90, 0.5]
    t = flexmatch_thresholds(labels, conf, 7, tau=0.95)
    # normaliser max(4, unused 2) = 4: beta_0 = 1 -> tau; beta_1 = 0.5 -> M = 1/3 -> tau/3; class 2 -> 0
    assert t[0] == pytest.approx(0.95) and t[1] == pytest.approx(0.95 / 3) and t[2] == 0.0
    # warm-up: while unused images outnumber every class, they normalise
    warm = flexmatch_thresholds([0, 0, -1, -1, -1, -1, -1, -1], [0.99, 0.99] + [0.1] * 6, 2)
    assert warm[0] == pytest.approx((2 / 6) / (2 - 2 / 6) * 0.95)
    assert flexmatch_thresholds([0, 0], [0.99, 0.99], 2, warmup=False)[0] == pytest.approx(0.95)


def test_pseudo_label_selection_is_class_balanced_and_seeded():
    labels = [0] * 6 + [1] * 2 + [2]
    conf = [0.99] * 6 + [0.5, 0.6] + [0.1]
    thresholds = np.array([0.9, 0.3, 0.95])
    chosen = select_pseudo_labels(labels, conf, thresholds, seed=1)
    assert sum(labels[i] == 0 for i in chosen) == 2 and sum(labels[i] == 1 for i in chosen) == 2
    assert 8 not in chosen  # below its class threshold
    assert chosen == select_pseudo_labels(labels, conf, thresholds, seed=1)


def test_violation_rate_on_ordered_and_reversed_confidences():
    rng = np.random.default_rng(0)
    ca, cb = rng.uniform(0.6, 1.0, 50), rng.uniform(0.6, 1.0, 50)
    ordered = np.minimum(ca, cb) - 0.2
    assert violation_rate(ordered, ca, cb) == 0.0 and mean_gap(ordered, ca, cb) == pytest.approx(0.2)
    reversed_ = np.maximum(ca, cb) + 0.01
    assert violation_rate(reversed_, ca, cb) == 1.0 and mean_gap(reversed_, ca, cb) < 0


def test_soft_ece_is_zero_when_confidence_matches_the_target():
    assert soft_ece([0.5, 0.5, 0.7], [0.5, 0.5, 0.7]) == pytest.approx(0.0)
    assert soft_ece([0.9, 0.9], [0.5, 0.5]) == pytest.approx(0.4)


def test_triplet_metrics_count_incomplete_triplets_and_give_intervals():
    triplets = [{"c_blend": 0.4, "c_a": 0.9, "c_b": 0.8, "target": 0.5, "named_source": True}] * 10
    triplets += [{"c_blend": None, "c_a": 0.9, "c_b": 0.8, "target": 0.0, "named_source": False}]
    m = triplet_metrics(triplets, n_bootstrap=50)
    assert m["n_triplets"] == 11 and m["n_incomplete"] == 1 and m["violation_rate"] == 0.0
    assert m["mean_gap_ci"] == pytest.approx([0.4, 0.4])


def test_prepare_blends_command_is_deterministic(tmp_path, capsys):
    root = tmp_path / "world"
    synthemo.build_world(root, synthemo.WorldConfig(n_train=0, n_test=4, n_ood=0, seed=2))
    test_file = next(root.glob("test*.jsonl"))
    for out in ("o1", "o2"):
        assert blends_main(["--records", str(test_file), "--image-root", str(root), "--out", str(tmp_path / out),
                            "--n", "6", "--seed", "4"]) == 0
    first = (tmp_path / "o1" / "blends.jsonl").read_bytes()
    assert first == (tmp_path / "o2" / "blends.jsonl").read_bytes()
    records = read_records(tmp_path / "o1" / "blends.jsonl")
    assert len(records) == 6
    for r in records:
        assert (tmp_path / "o1" / r.image).read_bytes() == (tmp_path / "o2" / r.image).read_bytes()
    assert "6 blends written" in capsys.readouterr().out


def test_collect_triplets_reads_sources_and_blends_from_predictions(tmp_path):
    cands = list(synthemo.EMOTIONS)
    a, b = _records(["awe", "fear"])
    blend = {"sources": ["r0", "r1"], "labels": ["awe", "fear"], "shares": [0.5, 0.5], "axis": "horizontal",
             "first": 0}
    blend_record = Record(id="blend/r0+r1", task="SynthEmo-8", image="b.png", candidates=cands, ground_truth="awe",
                          split="test", source="blend", meta={"blend": blend})
    rows = [{"record": a.to_dict(), "sample": 0, "response": _response("awe", 0.9), "error": None},
            {"record": b.to_dict(), "sample": 0, "response": _response("fear", 0.7), "error": None},
            {"record": blend_record.to_dict(), "sample": 0, "response": _response("fear", 0.65), "error": None}]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (t,) = collect_triplets(path)
    assert (t["c_blend"], t["c_a"], t["c_b"], t["target"], t["named_source"]) == (0.65, 0.9, 0.7, 0.5, True)
    assert violation_rate([t["c_blend"]], [t["c_a"]], [t["c_b"]]) == 1.0  # 0.65 >= 0.7 - 0.1


def test_eval_blends_runs_end_to_end_and_resumes(tiny_model_dir, tmp_path):
    from emocaliber.blend_rank import main as eval_blends

    root = tmp_path / "world"
    synthemo.build_world(root, synthemo.WorldConfig(n_train=0, n_test=8, n_ood=0, tasks=(synthemo.TASK_8,), seed=3))
    test_file = next(root.glob("test*.jsonl"))
    argv = ["--model", str(tiny_model_dir), "--data", str(test_file), "--image-root", str(root), "--out",
            str(tmp_path / "run"), "--n-triplets", "3", "--max-new-tokens", "24", "--backend", "transformers",
            "--n-bootstrap", "20"]
    assert eval_blends(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_triplets"] == metrics["n_requested"] == 3
    assert "violation rate" in (tmp_path / "run" / "report.md").read_text()
    predictions = (tmp_path / "run" / "eval" / "predictions.jsonl").read_bytes()
    assert eval_blends(argv) == 0  # a rerun reuses the finished predictions
    assert (tmp_path / "run" / "eval" / "predictions.jsonl").read_bytes() == predictions
    assert "top_two" not in metrics
    assert eval_blends([*argv, "--top-two"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["top_two"]["n_blends"] == 3  # an untrained model names no candidate: recall 0, counted
    assert metrics["top_two"]["n_fewer_than_two"] + round(3 * metrics["top_two"]["both_sources_recall"]) <= 3
    assert "Both-sources recall" in (tmp_path / "run" / "report.md").read_text()


def test_top_two_pass_asks_the_blends_for_two_labels_and_scores_both_sources(tmp_path):
    from emocaliber.evaluation import eval_request

    cands = list(synthemo.EMOTIONS)
    a, b = _records(["awe", "fear"])
    blends = [Record(id=f"blend/{k}", task="SynthEmo-8", image="b.png", candidates=cands, ground_truth="awe",
                     split="test", source="blend", meta={"blend": {"sources": ["r0", "r1"], "labels": ["awe", "fear"],
                                                                   "shares": [0.5, 0.5], "axis": "horizontal",
                                                                   "first": 0}}) for k in range(4)]
    triplets = tmp_path / "triplets.jsonl"
    triplets.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in [a, b, *blends]))
    asked = top_two_records(triplets)
    assert [r.id for r in asked] == [r.id for r in blends]  # the sources are not asked again
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    text = next(p["text"] for p in eval_request(asked[0], tmp_path, with_confidence=False).messages[-1]["content"]
                if p["type"] == "text")
    assert "two most likely" in text and "<confidence>" not in text
    answers = ["<answer>Fear, awe</answer>",  # both sources, either order: a hit
               "<answer>awe</answer>",  # one label: a miss, and fewer than two
               "<answer>awe, anger, fear</answer>",  # the first two are read: awe and anger, a miss
               None]  # no response: a miss
    rows = [{"record": r.to_dict(), "sample": 0, "response": t, "error": None} for r, t in zip(asked, answers)]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hits = top_two_hits(path)
    assert [h["both_sources"] for h in hits] == [True, False, False, False]
    assert hits[2]["named"] == ["awe", "anger"]
    m = recall_metrics(hits, n_bootstrap=50)
    assert (m["n_blends"], m["n_fewer_than_two"], m["both_sources_recall"]) == (4, 2, 0.25)
    assert 0 <= m["both_sources_recall_ci"][0] <= 0.25 <= m["both_sources_recall_ci"][1] <= 1


def test_paired_differences_against_a_baseline():
    rng = np.random.default_rng(1)
    base, better, soft = [], [], {"target": 0.5, "named_source": True}
    for k in range(200):
        ca, cb = rng.uniform(0.6, 0.9, 2)
        base.append({"id": f"b{k}", "c_blend": max(ca, cb), "c_a": ca, "c_b": cb, **soft})  # a violation
        better.append({"id": f"b{k}", "c_blend": min(ca, cb) - 0.2, "c_a": ca, "c_b": cb, **soft})  # none
    better.append({"id": "only-here", "c_blend": 0.1, "c_a": 0.9, "c_b": 0.9, **soft})
    d = paired_differences(better, base, n_bootstrap=100)
    assert d["n_paired"] == 200 and d["violation_rate_diff"] == -1.0 and d["violation_rate_diff_ci"][1] < 0
    metrics = {**triplet_metrics(better[:200], n_bootstrap=10), "paired_vs_baseline": {"baseline": "b", **d}}
    assert "significantly better" in report_markdown(metrics)
    same = paired_differences(base, base, n_bootstrap=50)
    assert same["violation_rate_diff"] == 0.0
    assert "no significant change" in report_markdown({**triplet_metrics(base, n_bootstrap=10),
                                                       "paired_vs_baseline": {"baseline": "b", **same}})
