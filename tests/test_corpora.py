"""Corpus builders: the CoT filter and pool split, confidence-target arithmetic, and resumable sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from emocaliber import synthemo
from emocaliber.corpora import (
    GOLD_HINT,
    BackendResponder,
    CorpusError,
    SampleCounts,
    SynthEmoTeacher,
    build_confidence_targets,
    build_cot,
    compare_with_oracle,
    confidence_target,
    split_pools,
)
from emocaliber.generation import SamplingSettings, TransformersBackend
from emocaliber.prompts import TEACHER_STRUCTURE, format_target, record_target
from emocaliber.records import Record, iter_jsonl, read_records

REPO = Path(__file__).resolve().parents[1]
PARTS = {"element": "a red field", "human": "no people present", "context": "dark", "interaction": "none",
         "analysis": "it feels tense"}


class ScriptedBackend:
    """Our own generation-backend interface answered from a script: ``texts[request id]`` -> K texts."""

    name = "scripted"

    def __init__(self, texts):
        self.texts = texts
        self.requests = []

    def generate(self, requests, settings):
        self.requests += requests
        return [self.texts[r.id][: settings.n] for r in requests]


def _record(root, rid, task="UnbiasedEmo-6", gt="anger", image=True, **meta):
    rel = f"img/{rid}.png"
    if image:
        (root / "img").mkdir(exist_ok=True)
        Image.new("RGB", (56, 56), (200, 10, 10)).save(root / rel)
    candidates = ["positive", "negative"] if task == "FI-2" else ["anger", "fear", "joy", "love", "sadness",
                                                                   "surprise"]
    return Record(id=rid, task=task, image=rel, candidates=candidates, ground_truth=gt, split="train",
                  source="t", meta=meta)


def _ok(answer, **parts):
    return format_target({**PARTS, **parts}, answer)


def test_cot_filter_keeps_exactly_the_valid_correct_tries(tmp_path):
    bad_format = "<think><element>x</element></think><answer>anger</answer>"
    texts = {
        "keep-first": [_ok("anger"), bad_format],
        "keep-second": [bad_format, _ok("anger", element="second try")],
        "wrong": [_ok("fear"), bad_format],                     # best try: a valid, wrong answer
        "off-list": [_ok("calm"), bad_format],                  # answer is no candidate
        "broken": [bad_format, "no tags at all"],
        "empty-part": [_ok("anger", analysis=""), _ok("anger", human="  ")],
        "with-conf": [format_target(PARTS, "anger", 0.4), bad_format],  # a confidence does not hurt stage 1
    }
    records = [_record(tmp_path, rid) for rid in texts] + [_record(tmp_path, "no-image", image=False)]
    # 10 more kept records of another task to check the per-task pool split.
    records += [_record(tmp_path, f"fi{i}", task="FI-2", gt="negative") for i in range(10)]
    texts.update({f"fi{i}": [format_target(PARTS, "negative"), bad_format] for i in range(10)})
    backend = ScriptedBackend(texts)
    responder = BackendResponder(backend, tmp_path, SamplingSettings(n=2, temperature=0.7), teacher=True,
                                 show_gold=True)
    summary = build_cot(records, responder, tmp_path / "out", seed=3, chunk_size=4, progress=False,
                        config={"teacher": "scripted", "samples": 2})

    t = summary["per_task"]["UnbiasedEmo-6"]
    assert (t["records"], t["kept"], t["image_error"], t["invalid_format"], t["not_a_candidate"],
            t["wrong_answer"]) == (8, 3, 1, 2, 1, 1)
    # Tries over the 17 answered records (2 each): kept = keep-first, keep-second, with-conf, 10 x fi = 13;
    # invalid = 1+1+1+1+2+2+1 + 10 (fi second tries) = 19; one not_a_candidate, one wrong.
    assert summary["tries"] == {"kept": 13, "invalid_format": 19, "not_a_candidate": 1, "wrong_answer": 1}
    # Pools, largest remainder: UnbiasedEmo 3 kept -> 1.8/0.9/0.3 -> 2/1/0; FI-2 10 kept -> 6/3/1.
    assert (t["stage1"], t["stage2_pool"], t["stage3"]) == (2, 1, 0)
    fi = summary["per_task"]["FI-2"]
    assert (fi["kept"], fi["stage1"], fi["stage2_pool"], fi["stage3"]) == (10, 6, 3, 1)

    out = tmp_path / "out"
    pools = {name: read_records(out / f"{name}.jsonl") for name in ("stage1", "stage2_pool", "stage3")}
    ids = [r.id for pool in pools.values() for r in pool]
    assert sorted(ids) == sorted(["keep-first", "keep-second", "with-conf"] + [f"fi{i}" for i in range(10)])
    kept = {r.id: r for pool in ("stage1", "stage2_pool") for r in pools[pool]}
    assert all(r.reasoning is not None for r in kept.values())
    assert all(r.reasoning is None for r in pools["stage3"])
    if "keep-second" in kept:
        assert kept["keep-second"].reasoning["element"] == "second try"
    assert json.loads((out / "summary.json").read_text())["dropped"]["image_error"] == 1
    assert "| UnbiasedEmo-6 | 8 | 3 | 1 | 0 | 2 | 1 | 1 | 2 | 1 | 0 |" in (out / "summary.md").read_text()
    # The teacher saw the structure instruction and the gold label; no request was made for the missing image.
    text = backend.requests[0].messages[-1]["content"][1]["text"]
    assert TEACHER_STRUCTURE in text and GOLD_HINT.format(label="anger") in text
    assert "no-image" not in [r.id for r in backend.requests]


def test_a_response_with_unicode_line_separators_is_kept_whole(tmp_path):
    # JSON leaves U+2028, U+2029 and U+0085 unescaped; str.splitlines() would cut the samples file's line there.
    odd = _ok("anger", element="a red\u2028field\u0085under\u2029light")
    records = [_record(tmp_path, "odd"), _record(tmp_path, "plain")]
    responder = BackendResponder(ScriptedBackend({"odd": [odd], "plain": [_ok("anger")]}), tmp_path,
                                 SamplingSettings(n=1), teacher=True, show_gold=True)
    for _ in range(2):  # the first run, then a resumed one reading the same samples back
        build_cot(records, responder, tmp_path / "out", seed=0, chunk_size=1, progress=False, config={})
    kept = [r.id for name in ("stage1", "stage2_pool", "stage3") for r in read_records(tmp_path / "out" /
                                                                                         f"{name}.jsonl")]
    assert sorted(kept) == ["odd", "plain"]
    rows = {row["id"]: row for _, row in iter_jsonl(tmp_path / "out" / "teacher_samples.jsonl")}
    assert rows["odd"]["responses"] == [odd]


def test_pool_split_is_seeded_per_task_and_disjoint(tmp_path):
    records = [_record(tmp_path, f"a{i}", image=False) for i in range(20)]
    first = split_pools(records, (0.6, 0.3, 0.1), seed=1)
    assert [len(p) for p in first] == [12, 6, 2]
    assert split_pools(records, (0.6, 0.3, 0.1), seed=1) == first
    assert split_pools(records, (0.6, 0.3, 0.1), seed=2) != first
    assert sorted(r.id for p in first for r in p) == sorted(r.id for r in records)
    with pytest.raises(ValueError, match="sum to 1"):
        split_pools(records, (0.5, 0.3, 0.1), seed=1)


def test_an_image_shared_by_two_tasks_goes_to_one_pool(tmp_path):
    # FI-8 and FI-2 records of the same 20 images, as VECBench and SynthEmo have them.
    records = []
    for i in range(20):
        records.append(_record(tmp_path, f"x{i}", image=False))
        records.append(replace(_record(tmp_path, f"x{i}", task="FI-2", gt="negative", image=False), id=f"x{i}-2"))
    pools = split_pools(records, (0.5, 0.2, 0.3), seed=0)
    images = [{r.image for r in p} for p in pools]
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])
    for task in ("UnbiasedEmo-6", "FI-2"):  # each task still gets the proportions
        assert [sum(r.task == task for r in p) for p in pools] == [10, 4, 6]


def test_synthemo_teacher_through_the_command_line(tmp_path):
    world = tmp_path / "world"
    synthemo.build_world(world, synthemo.WorldConfig(n_train=30, n_test=0, n_ood=0, tasks=("SynthEmo-8",)))
    cmd = [sys.executable, str(REPO / "data_prep" / "build_cot.py"), "--records", str(world / "train.jsonl"),
           "--image-root", str(world), "--teacher", "synthemo", "--samples", "3"]
    run = lambda *extra: subprocess.run(cmd + list(extra), capture_output=True, text=True, check=False)
    gold = run("--out", str(tmp_path / "gold"), "--show-gold")
    assert gold.returncode == 0, gold.stderr
    summary = json.loads((tmp_path / "gold" / "summary.json").read_text())
    assert summary["total"]["kept"] == 30 and summary["total"]["stage1"] == 18
    stage1 = read_records(tmp_path / "gold" / "stage1.jsonl")
    assert all(r.reasoning["analysis"] for r in stage1)

    free = run("--out", str(tmp_path / "free"))
    assert free.returncode == 0, free.stderr
    summary = json.loads((tmp_path / "free" / "summary.json").read_text())
    # Without the gold label the teacher answers from the image's label distribution: whatever it drops is a
    # wrong answer, never a format problem, and every kept record still carries its gold label.
    assert summary["total"]["kept"] + summary["dropped"]["wrong_answer"] == 30
    assert summary["tries"]["invalid_format"] == 0
    rows = SynthEmoTeacher(samples=1)([_record(tmp_path, "x", image=False)], seed=0)
    assert rows[0]["responses"] is None and rows[0]["error_kind"] == "teacher_error"
    ignored = run("--out", str(tmp_path / "t0"), "--temperature", "0")  # it would change nothing: refused
    assert ignored.returncode == 2 and "--temperature set the sampling of a model teacher" in ignored.stderr


def test_confidence_targets_equal_hand_computed_values(tmp_path):
    a = "<answer>{}</answer>"
    texts = {
        # K = 8. Votes: anger 5, fear 2, one response without a usable answer.
        "maj-gold": [a.format("anger")] * 5 + [a.format("fear")] * 2 + ["garbled"],
        # Same votes, gold is the minority answer fear.
        "maj-other": [a.format("anger")] * 5 + [a.format("fear")] * 2 + ["garbled"],
        "unanimous": [a.format("joy")] * 8,
        "silent": ["nothing"] * 8,
        # Tie 3-3: majority goes to the earlier candidate (anger), agreement is 3 either way.
        "tie": [a.format("fear")] * 3 + [a.format("anger")] * 3 + ["x", "y"],
    }
    gold = {"maj-gold": "anger", "maj-other": "fear", "unanimous": "joy", "silent": "joy", "tie": "fear"}
    records = [_record(tmp_path, rid, gt=gold[rid]) for rid in texts]
    responder = BackendResponder(ScriptedBackend(texts), tmp_path, SamplingSettings(n=8, temperature=1.0))
    run = lambda name, **kw: build_confidence_targets(records, responder, tmp_path / f"{name}.jsonl",
                                                      chunk_size=2, progress=False, **kw)

    run("agree")
    got = {r.id: r.confidence for r in read_records(tmp_path / "agree.jsonl")}
    # agreement = votes of the majority / answered samples, clipped to [0.05, 0.95], two decimals rounded
    # half-up: 5/7 = 0.714 -> 0.71 (both maj-gold and maj-other: kept as is; "garbled" is left out); 8/8 = 1
    # -> 0.95; tie 3/6 = 0.5 ("x", "y" left out); silent: no answer to agree with -> dropped.
    assert got == {"maj-gold": 0.71, "maj-other": 0.71, "unanimous": 0.95, "tie": 0.5}

    run("acc", definition="accuracy")
    got = {r.id: r.confidence for r in read_records(tmp_path / "acc.jsonl")}
    # accuracy = gold votes / K: 5/8 -> 0.63; 2/8 = 0.25; 8/8 -> 0.95; silent 0/8 -> 0.05; tie 3/8 -> 0.38.
    assert got == {"maj-gold": 0.63, "maj-other": 0.25, "unanimous": 0.95, "silent": 0.05, "tie": 0.38}

    summary = run("laplace", prior=(1.0, 1.0), mismatch="drop")
    got = {r.id: r.confidence for r in read_records(tmp_path / "laplace.jsonl")}
    # Laplace (k + 1) / (answered + 2): maj-gold 6/9 = 0.667 -> 0.67; unanimous 9/10 = 0.9; maj-other and tie
    # (majority anger, gold fear) dropped by mismatch="drop"; silent dropped.
    assert got == {"maj-gold": 0.67, "unanimous": 0.9}
    assert summary["dropped"] == {"majority_not_gold": 2, "no_answer_in_samples": 1}
    kept = read_records(tmp_path / "laplace.jsonl")[0]
    assert kept.meta["confidence_samples"] == {"K": 8, "answered": 7, "correct": 5, "majority": "anger",
                                               "agree": 5}
    assert kept.reasoning is None and kept.ground_truth == "anger"


def test_own_responses_replace_the_teacher_text_and_keep_the_gold_label(tmp_path):
    a = "<answer>{}</answer>"
    samples = {rid: [a.format("anger")] * 3 + [a.format("fear")] for rid in ("agrees", "differs", "broken")}
    own = {"agrees": [_ok("anger", element="its own words")], "differs": [_ok("fear")],
           "broken": ["<think><element>x</element></think><answer>anger</answer>"]}
    records = [_record(tmp_path, rid, gt="anger") for rid in samples]
    records = [Record.from_dict({**r.to_dict(), "reasoning": {**PARTS, "analysis": "the teacher's"}}) for r in records]
    sampler = BackendResponder(ScriptedBackend(samples), tmp_path, SamplingSettings(n=4, temperature=1.0))
    greedy = ScriptedBackend(own)
    own_responder = BackendResponder(greedy, tmp_path, SamplingSettings(n=1))
    out = tmp_path / "stage2.jsonl"
    summary = build_confidence_targets(records, sampler, out, chunk_size=2, progress=False,
                                       own_responder=own_responder)
    got = {r.id: r for r in read_records(out)}
    assert set(got) == {"agrees", "differs"} and summary["dropped"] == {"own_response_out_of_format": 1}
    assert got["agrees"].reasoning == {**PARTS, "element": "its own words"} and got["agrees"].answer is None
    assert got["differs"].answer == "fear" and got["differs"].ground_truth == "anger"
    assert got["differs"].reasoning == PARTS and got["differs"].confidence == 0.75  # 3 of 4 agree
    assert summary["answer_is_gold"] == 0.5 and summary["config"]["responses"] == "own"
    # The SFT target states the model's answer; the ground truth still scores it.
    assert record_target(got["differs"], with_confidence=True) == format_target(PARTS, "fear", 0.75)
    assert (tmp_path / "stage2.own.jsonl").is_file()
    # Resuming reads the saved responses: the backend is not asked again.
    asked = len(greedy.requests)
    build_confidence_targets(records, sampler, out, chunk_size=2, progress=False, own_responder=own_responder)
    assert len(greedy.requests) == asked and read_records(out) == list(got.values())


def test_confidence_target_function_and_oracle_comparison():
    counts = SampleCounts(samples=4, answered=4, correct=1, majority="a", agree=3)
    assert confidence_target(counts, "agreement") == 0.75
    assert confidence_target(counts, "accuracy") == 0.25
    assert confidence_target(counts, "accuracy", prior=(2, 2), clip=(0.3, 0.7)) == 0.38  # 3/8 = 0.375
    # Out-of-format samples count under accuracy (as wrong), not under agreement: 3 of 4 answered, K = 8.
    partial = SampleCounts(samples=8, answered=4, correct=1, majority="a", agree=3)
    assert confidence_target(partial, "agreement") == 0.75
    assert confidence_target(partial, "accuracy") == 0.13  # 1/8 = 0.125
    for bad in ({"definition": "vibes"}, {"clip": (0, 0.9)}, {"prior": (-1, 0)},
                {"clip": (0.05, 0.995)}, {"clip": (0.004, 0.95)}, {"clip": (0.051, 0.949)}):  # off the 0.01 grid
        with pytest.raises(ValueError):
            confidence_target(counts, **({"definition": "agreement"} | bad))
    fi2 = {"task": "FI-2", "candidates": ["positive", "negative"], "split": "train", "source": "t"}
    r1 = Record(id="1", image="a.png", ground_truth="positive", meta={"oracle_confidence": 0.9}, **fi2)
    r2 = Record(id="2", image="b.png", ground_truth="negative", meta={"oracle_confidence": 0.6}, **fi2)
    counted = [(r1, SampleCounts(10, 10, 8, "positive", 8)), (r2, SampleCounts(10, 10, 3, "positive", 7))]
    result = compare_with_oracle(counted, priors=((0.0, 0.0),))
    # agreement targets 0.8, 0.7 vs oracle 0.9, 0.6: MAE 0.1, bias 0; accuracy 0.8, 0.3: MAE (0.1 + 0.3) / 2.
    assert result["agreement"]["mae"] == pytest.approx(0.1)
    assert result["agreement"]["bias"] == pytest.approx(0.0)
    assert result["accuracy"]["mae"] == pytest.approx(0.2)
    assert result["accuracy"]["bias"] == pytest.approx(-0.2)
    assert result["agreement, majority=gold only"]["n"] == 1


class StopAfter:
    """Wraps a responder and raises after ``chunks`` chunks, as a kill between two chunk writes would."""

    def __init__(self, responder, chunks):
        self.responder, self.left = responder, chunks

    def __call__(self, records, seed):
        if self.left == 0:
            raise KeyboardInterrupt("simulated kill")
        self.left -= 1
        return self.responder(records, seed)


def test_interrupted_confidence_build_resumes_to_the_same_bytes(tiny_model_dir, tmp_path):
    from emocaliber.modeling import load_model_and_processor

    records = [_record(tmp_path, f"r{i}", task="FI-2" if i % 2 else "UnbiasedEmo-6",
                       gt="negative" if i % 2 else "anger") for i in range(4)]
    backend = TransformersBackend(load_model_and_processor(tiny_model_dir, padding_side="left"), batch_size=4,
                                  progress=False)
    responder = BackendResponder(backend, tmp_path, SamplingSettings(n=2, temperature=1.0, max_new_tokens=6))
    kwargs = {"definition": "accuracy", "seed": 11, "chunk_size": 2, "progress": False,
              "config": {"model": "t"}}

    summary = build_confidence_targets(records, responder, tmp_path / "full" / "stage2.jsonl", **kwargs)
    with pytest.raises(KeyboardInterrupt):
        build_confidence_targets(records, StopAfter(responder, 1), tmp_path / "cut" / "stage2.jsonl",
                                 **kwargs)
    partial = (tmp_path / "cut" / "stage2.samples.jsonl").read_text().splitlines()
    assert len(partial) == 2 and not (tmp_path / "cut" / "stage2.jsonl").exists()
    build_confidence_targets(records, responder, tmp_path / "cut" / "stage2.jsonl", **kwargs)
    for name in ("stage2.samples.jsonl", "stage2.jsonl", "stage2.summary.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()

    # Real samples from the tiny model: every record gets a target strictly inside (0, 1).
    written = read_records(tmp_path / "full" / "stage2.jsonl")
    assert summary["written"] == len(written) == 4
    assert all(0 < r.confidence < 1 and r.meta["confidence_samples"]["K"] == 2 for r in written)
    # Resuming with other settings would mix two runs: refused.
    with pytest.raises(CorpusError, match="other settings"):
        build_confidence_targets(records, responder, tmp_path / "cut" / "stage2.jsonl",
                                 **{**kwargs, "seed": 12})


def test_builders_skip_and_count_a_bad_input_line_unless_strict(tmp_path, capsys):
    from emocaliber.corpora import read_input_records
    from emocaliber.records import Record, RecordError, write_jsonl

    good = Record(id="FI-2/a.jpg", task="FI-2", image="a.jpg", candidates=["positive", "negative"],
                  ground_truth="positive", split="train", source="FI")
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [good])
    with path.open("a") as fh:
        fh.write("{bad\n")
    records, skipped = read_input_records(str(path), strict=False)
    assert [r.id for r in records] == ["FI-2/a.jpg"] and skipped == 1
    assert f"skipped: {path}:2:" in capsys.readouterr().err
    with pytest.raises(RecordError, match=":2: not valid JSON"):
        read_input_records(str(path), strict=True)
