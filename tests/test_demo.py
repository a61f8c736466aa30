"""End to end: the demo pipeline at a reduced size, through the real scripts, so a regression anywhere in the
chain (data, teacher, SFT, confidence targets, GRPO, evaluation, report) fails the suite.

The reduced size cannot show calibration being learned; it asserts the ordering it can support: stage 1 writes
the format and beats the untrained base, stage 2 states confidences that stage 1 does not, stage 3's rollouts gave
GRPO a confidence to learn from and it changed the weights, and every artefact of the report is there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from emocaliber.demo import DemoError, DemoSettings, Pipeline, code_digest
from emocaliber.demo_report import KEYS, STAGES, eval_rows
from emocaliber.metrics import auroc, bin_index, ece
from emocaliber.parsing import parse_response
from emocaliber.records import REASONING_PARTS, iter_jsonl, read_records


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    settings = DemoSettings.quick(str(out))
    log: list[str] = []
    table = Pipeline(settings, log=log.append).run()
    return out, table, log


@pytest.mark.slow
def test_demo_writes_the_stage_table(demo):
    out, table, _ = demo
    stages = json.loads((out / "stages.json").read_text())
    assert stages == json.loads(json.dumps(table))
    assert set(stages) == {*STAGES, "oracle"}
    groups = set(stages["oracle"])
    assert groups == {"Synth VSA", "Synth VER", "Synth OOD"}
    for stage, per_group in stages.items():
        assert set(per_group) == groups, stage
        for values in per_group.values():
            assert set(values) == set(KEYS)
            assert all(v is None or 0.0 <= v <= 1.0 for v in values.values()), (stage, values)
    for name in ("report.md", "reliability_synth_ver.png", "reliability_synth_vsa.png", "reliability_synth_ood.png"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "reliability_synth_ver.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_stages_are_ordered(demo):
    out, table, _ = demo
    vsa = "Synth VSA"
    assert table["stage1"][vsa]["accuracy"] > table["base"][vsa]["accuracy"]
    assert table["stage1"][vsa]["parse_rate"] > table["base"][vsa]["parse_rate"]
    assert table["stage1"][vsa]["ece"] is None and table["stage2"][vsa]["ece"] is not None
    s2 = load_file(out / "stage2" / "model.safetensors")
    s3 = load_file(out / "stage3" / "model.safetensors")
    assert any(not (s2[k] == s3[k]).all() for k in s2), "GRPO did not change the weights"
    state = json.loads((out / "stage3" / "trainer_state.json").read_text())
    steps = [entry for entry in state["log_history"] if "reward" in entry]
    assert steps
    # GRPO had something to learn from: rollouts of one prompt that stated different confidences. Without them
    # every advantage is 0 and only the rounding noise of the summed rewards moves the weights.
    assert any((e.get("rollout/confidence_group_std") or 0) > 0 for e in steps)


@pytest.mark.slow
def test_demo_stage2_learns_from_the_stage1_models_own_responses(demo):
    out, _, _ = demo
    summary = json.loads((out / "targets" / "stage2.summary.json").read_text())
    assert summary["config"]["responses"] == "own" and summary["written"] > 0
    own = {row["id"]: row["responses"][0] for _, row in iter_jsonl(out / "targets" / "stage2.own.jsonl")}
    for record in read_records(out / "targets" / "stage2.jsonl"):
        parsed = parse_response(own[record.id], record.candidates, mode="strict")
        assert record.stated_answer == parsed.label
        assert record.reasoning == {part: parsed.reasoning[part] for part in REASONING_PARTS}


@pytest.mark.slow
def test_demo_rerun_reuses_finished_steps(demo):
    out, table, _ = demo
    log: list[str] = []
    again = Pipeline(DemoSettings.quick(str(out)), log=log.append).run()
    assert again == table
    assert sum("reused" in line for line in log) == 11


def test_code_digest_follows_code_and_configs_only(tmp_path):
    (tmp_path / "recipes" / "demo").mkdir(parents=True)
    (tmp_path / "recipes" / "demo" / "stage3.yaml").write_text("learning_rate: 1.0e-4\n")
    (tmp_path / "parsing.py").write_text("X = 1\n")
    before = code_digest(tmp_path)
    (tmp_path / "notes.md").write_text("not code")
    assert code_digest(tmp_path) == before
    (tmp_path / "recipes" / "demo" / "stage3.yaml").write_text("learning_rate: 3.0e-4\n")
    assert code_digest(tmp_path) != before


def test_the_demo_runs_what_its_recipes_say():
    """The settings the full demo trains and evaluates with are the YAML files' (recipes/demo), parsed the way
    each entry point parses them: the values the documented demo has always used."""
    from trl import GRPOConfig, SFTConfig, TrlParser

    from emocaliber.train.configs import DataArgs, ModelArgs, parse_args_and_config
    from emocaliber.train.grpo import GRPOScriptArgs

    plan = {name: key for name, key, _ in Pipeline(DemoSettings(out="runs/x"), log=lambda _: None).plan()}
    assert [key[0] for key in plan.values()] == ["prepare synthemo", "prepare cot", "build_tiny_model", "train sft",
                                                "prepare targets", "train sft", "train grpo"] + ["eval"] * 4
    sft = TrlParser((ModelArgs, DataArgs, SFTConfig))
    _, data1, stage1 = parse_args_and_config(sft, plan["stage1"][1:])
    _, data2, stage2 = parse_args_and_config(TrlParser((ModelArgs, DataArgs, SFTConfig)), plan["stage2"][1:])
    assert (stage1.num_train_epochs, stage1.learning_rate, data1.with_confidence) == (3.0, 5e-3, False)
    assert (stage2.num_train_epochs, stage2.learning_rate, data2.with_confidence) == (6.0, 2e-3, True)
    grpo = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig))
    _, _, script, stage3 = parse_args_and_config(grpo, plan["stage3"][1:])
    assert (stage3.learning_rate, stage3.temperature, stage3.num_generations, stage3.beta, stage3.max_steps) == (
        1e-4, 0.7, 16, 0.1, 200)
    assert (script.confidence_credit, script.confidence_credit_weight) == ("confidence_only", 1.0)
    for flag in ("--learning_rate", "--num_train_epochs", "--max_steps", "--beta"):  # nothing overrides the YAML
        assert all(flag not in plan[stage] for stage in ("stage1", "stage2", "stage3"))
    synthemo = plan["synthemo"]
    assert synthemo[synthemo.index("--n-train") + 1] == "1100" and synthemo[synthemo.index("--n-test") + 1] == "1000"
    assert "awe:fear,fear:awe,excitement:anger,disgust:sadness" in synthemo


@pytest.mark.parametrize("argv, expected", [
    (["--quick"], {"n_train": 450, "n_test": 40, "stage3_steps": 6}),
    (["--quick", "--n-train", "500", "--stage3-steps", "2"], {"n_train": 500, "n_test": 40, "stage3_steps": 2}),
    (["--n-test", "300"], {"n_train": None, "n_test": 300, "stage3_steps": None}),
])
def test_size_flags_are_never_ignored(argv, expected):
    """--quick picks reduced sizes; a size flag given with it (or without it) is what the run uses."""
    import argparse

    from emocaliber.demo import add_demo_arguments, settings_from_args

    settings = settings_from_args(add_demo_arguments(argparse.ArgumentParser()).parse_args(argv))
    assert {k: getattr(settings, k) for k in expected} == expected
    plan = {name: key for name, key, _ in Pipeline(settings, log=lambda _: None).plan()}
    if expected["n_train"] is not None:
        assert plan["synthemo"][plan["synthemo"].index("--n-train") + 1] == str(expected["n_train"])
    if expected["stage3_steps"] is not None:
        assert plan["stage3"][plan["stage3"].index("--max_steps") + 1] == str(expected["stage3_steps"])


def test_a_step_is_redone_when_the_code_changed(tmp_path):
    pipeline = Pipeline(DemoSettings(out=str(tmp_path)), log=lambda _: None)
    runs: list[int] = []

    def step() -> bool:
        return pipeline.step(1, 1, "synthemo", ["make", "it"], lambda: runs.append(1), force=False)

    assert step() and not step() and len(runs) == 1
    pipeline.code = "another checkout"
    assert step() and len(runs) == 2
    pipeline.s.threads += 1  # another thread count gives other numbers
    assert step() and len(runs) == 3


def test_every_step_runs_with_the_settings_thread_count(tmp_path, monkeypatch):
    import torch

    seen: list[int] = []
    pipeline = Pipeline(DemoSettings(out=str(tmp_path), threads=3), log=lambda _: None)
    monkeypatch.setattr(pipeline, "plan", lambda: [("synthemo", ["x"], lambda: seen.append(torch.get_num_threads()))])
    before = torch.get_num_threads()
    with pytest.raises(DemoError, match="report"):  # no evaluation to report on
        pipeline.run()
    assert seen == [3] and torch.get_num_threads() == before
    assert json.loads((tmp_path / ".done" / "synthemo.json").read_text())["threads"] == 3


def test_a_cut_short_evaluation_is_named(tmp_path):
    ev = tmp_path / "eval" / "stage2"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text('{"modes": ')
    with pytest.raises(ValueError, match=r"eval/stage2/metrics\.json: not an evaluation's metrics"):
        eval_rows(ev, with_confidence=True)


def test_an_unreadable_marker_means_not_done(tmp_path):
    pipeline = Pipeline(DemoSettings(out=str(tmp_path)), log=lambda _: None)
    runs: list[int] = []

    def step() -> bool:
        return pipeline.step(1, 1, "synthemo", ["make", "it"], lambda: runs.append(1), force=False)

    assert step() and not step()
    marker = tmp_path / ".done" / "synthemo.json"
    marker.write_text('{"command": ["ma')  # a write cut short by a kill
    assert step() and len(runs) == 2
    assert json.loads(marker.read_text())["command"] == ["make", "it"]
    assert [p.name for p in marker.parent.iterdir()] == ["synthemo.json"]


def test_a_failing_evaluation_worker_is_a_demo_error_with_its_output(tmp_path):
    """Evaluations run in worker processes with their output captured: a failing one must still stop the demo
    with the script's own message and leave no done-marker, and the one beside it must finish and be kept."""
    logged: list[str] = []
    # One worker runs them in order, so the failure comes first and the step after it must still be kept.
    pipeline = Pipeline(DemoSettings(out=str(tmp_path), eval_workers=1), log=logged.append)
    steps = [("eval-base", ["eval", "--no-such-flag"]),
             ("eval-stage1", ["eval", "--help"])]  # --help exits 0: a finished step
    with pytest.raises(DemoError, match=r"emocaliber eval exited with 2.*\n.*arguments are required: --model"):
        pipeline.evaluate(8, 12, steps, force=False)
    assert logged[:2] == ["[8/12] eval-base ... (0m00s)", "[9/12] eval-stage1 ... (0m00s)"]
    assert logged[2].startswith("[9/12] eval-stage1: finished in ") and len(logged) == 3
    assert not (tmp_path / ".done" / "eval-base.json").exists()
    assert json.loads((tmp_path / ".done" / "eval-stage1.json").read_text())["threads"] == 1


def test_an_evaluation_that_crashes_is_a_demo_error_with_its_traceback(tmp_path, monkeypatch):
    """A crash (an exception, not an exit code) in a worker must reach the user as the demo's error with the
    traceback, after the evaluation beside it finished and was kept, not as a bare traceback from the pool."""
    (tmp_path / "crash_command.py").write_text(
        "def main(argv):\n    print('loading')\n    raise RuntimeError('boom in the evaluation')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers start with this process's sys.path
    pipeline = Pipeline(DemoSettings(out=str(tmp_path), eval_workers=1), log=lambda _: None)
    steps = [("eval-base", ["crash_command:main"]), ("eval-stage1", ["eval", "--help"])]
    with pytest.raises(DemoError, match=r"(?s)crash_command:main crashed; rerun it alone.*loading.*RuntimeError: boom"):
        pipeline.evaluate(8, 12, steps, force=False)
    assert not (tmp_path / ".done" / "eval-base.json").exists()
    assert (tmp_path / ".done" / "eval-stage1.json").exists()


def test_a_broken_evaluation_at_report_time_is_a_demo_error(tmp_path, monkeypatch):
    """The report reads every evaluation again: one changed after it finished stops the demo with its path and
    how to redo it, through the demo's one-line error rather than a traceback."""
    from emocaliber import demo as demo_module

    pipeline = Pipeline(DemoSettings(out=str(tmp_path)), log=lambda _: None)
    monkeypatch.setattr(pipeline, "plan", list)
    (tmp_path / "eval" / "base").mkdir(parents=True)
    (tmp_path / "eval" / "base" / "metrics.json").write_text("{}")
    with pytest.raises(demo_module.DemoError, match=r"report: .*eval/base/metrics\.json.*--force"):
        pipeline.run()
    (tmp_path / "eval" / "base" / "metrics.json").unlink()
    with pytest.raises(demo_module.DemoError, match=r"report: .*eval/base/metrics\.json"):
        pipeline.run()


def _bench(name: str):
    """A script of bench/ as a module (bench/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_targets_name_what_cannot_be_measured():
    targets = _bench("demo_targets")
    row = {"accuracy": 0.8, "ece": 0.02, "brier": 0.1, "auroc": 0.8, "parse_rate": 1.0}
    table = {stage: {g: dict(row) for g in targets.GROUPS} for stage in ("stage1", "stage2", "oracle")}
    table["stage2"]["Synth VSA"]["ece"] = 0.0
    table["oracle"]["Synth VER"]["ece"] = 0.013  # what the 30% cut asks of VER: not below the oracle's
    stage3 = {g: dict(row, ece=0.01) for g in targets.GROUPS}
    stage3["Synth VER"]["auroc"] = None
    found = {name: (holds, measured) for _, name, holds, measured in targets.checks(table, stage3)}
    assert found["Synth VSA stage 3 ECE >= 30% below stage 2"] == (
        False, "1.0 against 0 (asks for 0.00, below the oracle's 2.00)")
    assert found["Synth VER stage 3 AUROC >= stage 2"] == (False, "not measured")
    assert found["Synth VER stage 3 ECE >= 30% below stage 2"] == (True, "-50%")


def _write_predictions(ev, rows: list[tuple[str, str, float]]) -> None:
    """An evaluation directory holding one SynthEmo-2 (VSA) prediction per (id, answer, confidence); truth positive."""
    ev.mkdir(parents=True)
    think = "<think>" + "".join(f"<{p}>x</{p}>" for p in REASONING_PARTS) + "</think>"
    with open(ev / "predictions.jsonl", "w") as f:
        for rid, answer, conf in rows:
            record = {"id": rid, "task": "SynthEmo-2", "candidates": ["positive", "negative"],
                      "ground_truth": "positive"}
            response = f"{think}<answer>{answer}</answer><confidence>{conf:.2f}</confidence>"
            f.write(json.dumps({"record": record, "response": response, "sample": 0, "error": None}) + "\n")


def test_targets_compare_stage3_with_stage2_on_the_same_images(tmp_path):
    targets = _bench("demo_targets")
    answers = ["positive" if i % 3 else "negative" for i in range(60)]  # two in three right
    # Stage 2 states nearly the same confidence for every answer; stage 3 ranks right above wrong.
    stage2 = [(f"r{i}", a, 0.60 + 0.01 * (i % 5)) for i, a in enumerate(answers)]
    stage3 = [(f"r{i}", a, 0.80 if a == "positive" else 0.40) for i, a in enumerate(answers)]
    _write_predictions(tmp_path / "s2", stage2 + [("only-in-stage-2", "positive", 0.5)])
    _write_predictions(tmp_path / "s3", stage3)
    _write_predictions(tmp_path / "same", stage2)
    better = targets.paired(tmp_path / "s2", tmp_path / "s3", 200)
    assert better["Synth VSA"]["n"] == 60 and better["Synth VER"]["n"] == 0
    diff, low, high = better["Synth VSA"]["auroc_diff"]
    assert diff == pytest.approx(1.0 - auroc([c for *_, c in stage2], [a == "positive" for a in answers]))
    assert 0 < low <= diff <= high
    assert better["Synth VSA"]["ece_ratio"][0] == pytest.approx(
        ece([c for *_, c in stage3], [a == "positive" for a in answers])
        / ece([c for *_, c in stage2], [a == "positive" for a in answers]))
    same = targets.paired(tmp_path / "s2", tmp_path / "same", 200)["Synth VSA"]
    assert same["auroc_diff"] == (0.0, 0.0, 0.0) and same["ece_ratio"] == pytest.approx((1.0, 1.0, 1.0))


@pytest.mark.slow
def test_stage3_variant_reruns_the_demos_stage3(demo):
    """With no flags the variant is the demo's stage 3 to the byte; a flag given overrides the demo's."""
    import subprocess
    import sys
    from pathlib import Path

    from trl import GRPOConfig, SFTConfig, TrlParser

    from emocaliber.train.configs import DataArgs, ModelArgs, parse_args_and_config
    from emocaliber.train.grpo import GRPOScriptArgs

    out, _, _ = demo
    repo = Path(__file__).parents[1]
    markers = {p.name: p.read_bytes() for p in (out / ".done").iterdir()}
    cmd = [sys.executable, str(repo / "bench/stage3_variant.py"), str(out), "same"]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("stage3/model.safetensors", "eval/stage3/predictions.jsonl"):
        assert (out / "same" / name).read_bytes() == (out / name).read_bytes(), name
    assert {p.name: p.read_bytes() for p in (out / ".done").iterdir()} == markers  # the run is left as it was

    (grpo, _), _ = _bench("stage3_variant").variant_commands(out, "v2", ["--max_steps", "2"])
    assert grpo[grpo.index("--output_dir") + 1] == str(out / "v2" / "stage3")
    parser = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig))
    assert parse_args_and_config(parser, grpo[1:])[3].max_steps == 2  # the demo's quick stage 3 runs 6
    variant = _bench("stage3_variant").variant_commands
    (sft, ev2, grpo, ev3), _ = variant(out, "v2", [], ["--confidence_loss_weight", "3"])
    assert (sft[0], ev2[0], ev3[0]) == ("recipes/stage2_sft.py", "eval/run_vecbench.py", "eval/run_vecbench.py")
    stage2 = str(out / "v2" / "stage2")
    assert sft[sft.index("--output_dir") + 1] == grpo[grpo.index("--model_name_or_path") + 1] == stage2
    assert ev2[ev2.index("--model") + 1] == stage2
    assert ev2[ev2.index("--out") + 1] == str(out / "v2" / "eval" / "stage2")
    sft_parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
    assert parse_args_and_config(sft_parser, sft[1:])[1].confidence_loss_weight == 3

    again = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 2 and "exists; choose another name" in again.stderr
    escape = subprocess.run(cmd[:3] + ["../v3"], cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert escape.returncode == 2 and "plain directory name" in escape.stderr


@pytest.mark.slow
def test_greedy_prefix_rollouts_sample_only_the_confidence(demo):
    from transformers import GenerationMixin

    from emocaliber.generation import SamplingSettings, TransformersBackend, record_request

    out, _, _ = demo
    backend = TransformersBackend(out / "stage2", batch_size=4, progress=False)
    requests = [record_request(r, image_root=out / "data") for r in read_records(out / "data" / "test.jsonl")[:8]]
    greedy = [texts[0] for texts in backend.generate(requests, SamplingSettings(max_new_tokens=160))]
    i = next(j for j, text in enumerate(greedy) if "<confidence>" in text)
    prefix = greedy[i][:greedy[i].index("<confidence>") + len("<confidence>")]
    hot = SamplingSettings(temperature=1.5, max_new_tokens=160, seed=1)
    assert not all(t[0].startswith(prefix) for t in backend.generate([requests[i]] * 4, hot))
    original = GenerationMixin.generate
    with _bench("stage3_variant").greedy_prefix_rollouts(backend.processor.tokenizer):
        shared = [t[0] for t in backend.generate([requests[i]] * 4, hot)]
    assert GenerationMixin.generate is original
    assert all(t.startswith(prefix) and len(t) > len(prefix) for t in shared)
    assert any(t != greedy[i] for t in shared)  # what follows the prefix was sampled


def _recalibration(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))  # it imports its neighbours
    return _bench("prompt_recalibration")


def test_recalibrations_state_what_their_fit_items_say(monkeypatch):
    rc = _recalibration(monkeypatch)
    rng = np.random.default_rng(0)
    names = np.array(["awe", "fear", "joy"] * 40)
    conf = rng.uniform(0.45, 0.75, len(names))
    right = rng.random(len(names)) < np.where(names == "awe", 0.5, 0.7)
    items = (names, conf, right)
    shifted = rc.class_shift(items, items)
    for k in ("awe", "fear", "joy"):  # in sample, each class then states its accuracy on average (no clipping here)
        assert shifted[names == k].mean() == pytest.approx(right[names == k].mean())
        assert np.array_equal(np.argsort(shifted[names == k]), np.argsort(conf[names == k]))  # ranking kept
    binned = rc.binning(items, items)
    for b in np.unique(bin_index(conf)):
        assert np.all(binned[bin_index(conf) == b] == right[bin_index(conf) == b].mean())
    only_high = tuple(a[conf >= 0.6] for a in items)
    low = conf < 0.6
    assert np.array_equal(rc.binning(only_high, items)[low], conf[low])  # no fit items: stated confidence kept
    # Shrinking keeps each class's direction and moves it less, the less its prompts can tell.
    shrunk = rc.class_shift_shrunk(items, items)
    for k in ("awe", "fear", "joy"):
        full, part = (x[names == k].mean() - conf[names == k].mean() for x in (shifted, shrunk))
        assert 0 < part / full < 1
    few = tuple(a[:6] for a in items)  # two prompts per class: the gaps are all noise
    assert np.array_equal(rc.class_shift_shrunk(few, items), conf)
    # Cross-fitting never uses an item's own label.
    flipped = right.copy()
    flipped[7] = not flipped[7]
    a, b = (rc.cross_fit(rc.class_shift, (names, conf, r)) for r in (right, flipped))
    assert a[7] == b[7] and not np.array_equal(a, b)


@pytest.mark.slow
def test_prompt_recalibration_fits_on_stage2s_answers_to_the_stage3_prompts(demo):
    import subprocess
    import sys
    from pathlib import Path

    out, _, _ = demo
    repo = Path(__file__).parents[1]
    cmd = [sys.executable, str(repo / "bench/prompt_recalibration.py"), str(out), "--draws", "5", "--seen", "20"]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(iter_jsonl(out / "recalibration" / "stage2-on-stage3-prompts" / "predictions.jsonl"))
    prompts = list(iter_jsonl(out / "cot" / "stage3.jsonl"))
    assert [r["record"]["id"] for _, r in rows] == [p["id"] for _, p in prompts]
    assert f"stage 2 on {len(prompts)} stage-3 prompts" in done.stdout
    for name in ("stage 3", "binning", "class shift", "class shift, shrunk", "class shift, cross-fit"):
        assert f"  {name}: " in done.stdout.split("cuts of 30% or more")[1]


def test_stage2_fit_runs_stage2_on_its_own_training_records(demo):
    import subprocess
    import sys
    from collections import defaultdict
    from pathlib import Path

    out, _, _ = demo
    repo = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, str(repo / "bench/stage2_fit.py"), str(out)], cwd=repo,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [r for _, r in iter_jsonl(out / "targets" / "stage2.jsonl")]
    rows = list(iter_jsonl(out / "fit" / "stage2" / "predictions.jsonl"))
    assert [r["record"]["id"] for _, r in rows] == [r["id"] for r in records]
    targets = defaultdict(list)
    for r in records:
        targets[(r["task"], r["meta"]["mix"]["primary"])].append(r["confidence"])
    def table(stdout: str) -> list[str]:
        lines = stdout.splitlines()
        return lines[next(i for i, line in enumerate(lines) if "stage 2 on its" in line) + 2:]

    printed = {tuple(line.split()[:2]): line.split()[2:] for line in table(done.stdout)}
    assert printed.keys() == targets.keys()
    for key, values in targets.items():
        n, target, _, within, same = printed[key]
        assert int(n) == len(values) and float(target) == pytest.approx(sum(values) / len(values), abs=0.005)
        assert 0 <= float(within) <= 1 and 0 <= float(same) <= 1
    again = subprocess.run([sys.executable, str(repo / "bench/stage2_fit.py"), str(out)], cwd=repo,
                           capture_output=True, text=True, timeout=600, check=False)
    assert table(again.stdout) == table(done.stdout)
    assert "eval/run_vecbench.py" in done.stdout and "eval/run_vecbench.py" not in again.stdout  # kept, not rerun
