"""Local accuracy targets: TF-IDF neighbours and their mean by hand, and through the target builder."""

from __future__ import annotations

import numpy as np
import pytest
from test_corpora import ScriptedBackend, _ok, _record

from emocaliber.corpora import BackendResponder, build_confidence_targets
from emocaliber.generation import SamplingSettings
from emocaliber.local_accuracy import local_accuracy, neighbour_mean, tfidf
from emocaliber.records import read_records


def test_tfidf_rows_are_unit_cosine_vectors():
    x = tfidf(["red square, red glow", "Red glow; red square", "blue circle", ""])
    sim = x @ x.T
    assert sim[0, 1] == pytest.approx(1.0)  # same words, other order and case
    assert sim[0, 2] == pytest.approx(0.0)  # no word in common
    assert np.linalg.norm(x[3]) == 0.0  # no words: a zero row, not NaN


def test_neighbour_mean_by_hand():
    features = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert neighbour_mean(features, values, 1).tolist() == [1.0, 2.0, 3.0, 4.0]  # itself first
    # Row 0's nearest: itself, then row 1 (cos 0.8), then row 3 (0.6). Row 2's: itself, row 3, row 1.
    assert neighbour_mean(features, values, 2).tolist() == [1.5, 3.0, 3.5, 3.0]
    assert neighbour_mean(features, values, 3).tolist() == pytest.approx([7 / 3, 7 / 3, 3.0, 3.0])
    assert neighbour_mean(features, values, 99).tolist() == [2.5] * 4  # k beyond n: everyone
    # Blocks of rows give the same result as one block.
    assert neighbour_mean(features, values, 2, block=1).tolist() == [1.5, 3.0, 3.5, 3.0]
    with pytest.raises(ValueError, match="at least 1"):
        neighbour_mean(features, values, 0)


def test_local_accuracy_sees_a_cluster_that_is_right_less_often_and_stays_inside_its_task():
    # Six images described alike ("awe") whose answers are right 4 times in 6, six others ("calm") always right.
    texts = ["dark towering peak awe"] * 6 + ["soft green meadow calm"] * 6
    correct = [1, 1, 0, 1, 0, 1] + [1] * 6
    assert local_accuracy(correct, texts, ["VSA"] * 12, k=6) == pytest.approx([4 / 6] * 6 + [1.0] * 6)
    # The same records split across two tasks only look for neighbours within their own task.
    groups = ["a", "b"] * 6
    got = local_accuracy(correct, texts, groups, k=3)
    assert got[0] == pytest.approx((1 + 0 + 0) / 3)  # records 0, 2, 4 are task a's "awe" records
    assert got[1] == pytest.approx((1 + 1 + 1) / 3)  # records 1, 3, 5
    with pytest.raises(ValueError, match="same length"):
        local_accuracy(correct[:3], texts, groups, k=3)


def test_builder_writes_local_accuracy_targets(tmp_path):
    # UnbiasedEmo-6 records: four "dark peak" images answered anger 8/8 (agreement 1 -> 0.95 after the clip)
    # whose gold is anger for two and fear for two; two "meadow" images answered joy 6/8, always right.
    peak, meadow = {"element": "a dark towering peak"}, {"element": "a soft green meadow"}
    texts = {f"p{i}": [_ok("anger", **peak)] * 8 for i in range(4)}
    texts |= {f"m{i}": [_ok("joy", **meadow)] * 6 + [_ok("love", **meadow)] * 2 for i in range(2)}
    texts["silent"] = ["no answer"] * 8
    gold = {"p0": "anger", "p1": "fear", "p2": "anger", "p3": "fear", "m0": "joy", "m1": "joy", "silent": "joy"}
    records = [_record(tmp_path, rid, gt=gold[rid]) for rid in texts]
    responder = BackendResponder(ScriptedBackend(texts), tmp_path, SamplingSettings(n=8, temperature=1.0))
    run = lambda name, **kw: build_confidence_targets(records, responder, tmp_path / f"{name}.jsonl",
                                                      progress=False, **kw)
    summary = run("local", definition="local_accuracy", neighbours=4)
    got = {r.id: r.confidence for r in read_records(tmp_path / "local.jsonl")}
    # Peaks: their 4 nearest are the four peaks, 2 right -> 0.5. Meadows: both meadows and the two nearest
    # peaks (the shared template words give them a cosine > 0; ties by index: p0, p1), 3 right of 4 -> 0.75.
    # "silent" names no candidate: nothing to be right with, dropped as under agreement.
    assert got == {"p0": 0.5, "p1": 0.5, "p2": 0.5, "p3": 0.5, "m0": 0.75, "m1": 0.75}
    assert summary["dropped"] == {"no_answer_in_samples": 1}
    assert summary["config"]["neighbours"] == 4
    agreement = run("agree")
    assert agreement["targets"] == {"0.75": 2, "0.95": 4} and "neighbours" not in agreement["config"]
    for bad in ({"neighbours": 0}, {"mismatch": "drop"}, {"prior": (1.0, 1.0)}):
        with pytest.raises(ValueError, match="local_accuracy needs"):
            run("x", definition="local_accuracy", **bad)


def test_local_accuracy_with_own_responses_scores_the_greedy_answer_the_record_states(tmp_path):
    # Every image's samples answer anger 3 times in 4 (the gold label), but the greedy response of "differs"
    # says fear: its record states fear, so its target must say fear is wrong, whatever the majority says.
    a = "<answer>{}</answer>"
    samples = {rid: [a.format("anger")] * 3 + [a.format("fear")] for rid in ("agrees", "differs")}
    own = {"agrees": [_ok("anger")], "differs": [_ok("fear")]}
    records = [_record(tmp_path, rid, gt="anger") for rid in samples]
    sampler = BackendResponder(ScriptedBackend(samples), tmp_path, SamplingSettings(n=4, temperature=1.0))
    own_responder = BackendResponder(ScriptedBackend(own), tmp_path, SamplingSettings(n=1))
    build_confidence_targets(records, sampler, tmp_path / "own.jsonl", definition="local_accuracy", neighbours=1,
                             progress=False, own_responder=own_responder)
    got = {r.id: (r.answer, r.confidence) for r in read_records(tmp_path / "own.jsonl")}
    assert got == {"agrees": (None, 0.95), "differs": ("fear", 0.05)}  # 1 and 0 of 1, clipped
    # With the teacher's text the record states the gold label; the majority answer stands in for the model's.
    build_confidence_targets(records, sampler, tmp_path / "teacher.jsonl", definition="local_accuracy",
                             neighbours=1, progress=False)
    assert [r.confidence for r in read_records(tmp_path / "teacher.jsonl")] == [0.95, 0.95]
