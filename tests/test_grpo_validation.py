"""Validation during GRPO and checkpoint selection: the pure choice on hand-made tables, the data checks, and a
deliberately harmful stage 3 on the tiny model that the selection undoes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from emocaliber import synthemo, tasks
from emocaliber.parsing import parse_response
from emocaliber.records import REASONING_PARTS, Record, read_records, write_records
from emocaliber.rewards import REWARDS, completion_text
from emocaliber.train.checkpoint import INFO_FILE, file_sha256
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs
from emocaliber.train.data import DataError
from emocaliber.train.validation import (
    GROUP_METRICS,
    VAL_LOG,
    Guards,
    ValidationArgs,
    check_schedule,
    holdout_by_image,
    load_validation,
    select_checkpoint,
    selection_markdown,
    spread,
)

# Tiny models on a shared CPU run many times faster on one thread than on one per core (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


# --- selection on hand-made tables ----------------------------------------------------------------------------


def _entry(step: int, **groups: tuple[float, float, float]) -> dict:
    """groups: name -> (accuracy, parse rate, brier); nll is 2 x brier so the two metrics can disagree only when
    a test sets them apart."""
    return {"step": step, "groups": {g: {"accuracy": a, "parse_rate": p, "brier": b, "nll": 2 * b}
                                     for g, (a, p, b) in groups.items()}}


def test_selection_takes_the_lowest_score_among_eligible_steps():
    table = [_entry(0, vsa=(0.80, 1.0, 0.20), ver=(0.50, 1.0, 0.30)),
             _entry(10, vsa=(0.80, 1.0, 0.15), ver=(0.50, 1.0, 0.25)),   # mean 0.20
             _entry(20, vsa=(0.81, 1.0, 0.10), ver=(0.50, 1.0, 0.26))]   # mean 0.18: best
    chosen = select_checkpoint(table, "brier")
    assert chosen.step == 20 and chosen.score == pytest.approx(0.18)
    assert [c["selected"] for c in chosen.candidates] == [False, False, True]
    assert "step 20 has the lowest mean brier" in chosen.reason


def test_selection_falls_back_to_step_0_when_every_later_step_is_worse():
    table = [_entry(0, vsa=(0.8, 1.0, 0.20)), _entry(5, vsa=(0.8, 1.0, 0.21)), _entry(10, vsa=(0.8, 1.0, 0.20))]
    chosen = select_checkpoint(table, "brier")
    assert chosen.step == 0  # a tie is not an improvement: the earlier step stays
    assert chosen.reason.startswith("step 0 (the starting model) kept")


def test_guards_exclude_lost_accuracy_and_broken_format_even_with_a_better_score():
    table = [_entry(0, vsa=(0.80, 0.99, 0.20), ver=(0.50, 0.99, 0.30)),
             _entry(10, vsa=(0.78, 1.00, 0.05), ver=(0.50, 1.00, 0.05)),   # VSA lost 2 points
             _entry(20, vsa=(0.80, 1.00, 0.05), ver=(0.50, 0.90, 0.05)),   # VER parses 90%
             _entry(30, vsa=(0.795, 1.0, 0.19), ver=(0.50, 1.00, 0.29))]  # within the 1-point margin: eligible
    chosen = select_checkpoint(table, "brier", Guards(accuracy_margin=0.01, min_parse_rate=0.95))
    assert chosen.step == 30
    why = {c["step"]: c["why_not"] for c in chosen.candidates}
    assert why[0] == [] and why[30] == []
    assert len(why[10]) == 1 and why[10][0].startswith("vsa: accuracy 0.7800 < step 0's 0.8000")
    assert len(why[20]) == 1 and why[20][0].startswith("ver: parse rate 0.9000 < 0.95")
    # with a wider margin step 10 (lowest score) wins
    assert select_checkpoint(table, "brier", Guards(accuracy_margin=0.03, min_parse_rate=0.95)).step == 10


def test_step_0_is_eligible_whatever_its_own_parse_rate():
    table = [_entry(0, vsa=(0.5, 0.50, 0.30)), _entry(10, vsa=(0.5, 0.60, 0.10))]
    assert select_checkpoint(table, "brier", Guards(min_parse_rate=0.95)).step == 0


def test_score_margin_keeps_one_group_from_paying_for_another():
    table = [_entry(0, vsa=(0.8, 1.0, 0.20), ver=(0.5, 1.0, 0.30)),
             _entry(10, vsa=(0.8, 1.0, 0.05), ver=(0.5, 1.0, 0.34))]   # mean better, VER worse by 0.04
    assert select_checkpoint(table, "brier", Guards(score_margin=None)).step == 10  # the mean alone
    chosen = select_checkpoint(table, "brier", Guards(score_margin=0.02))
    assert chosen.step == 0 and "ver: brier 0.3400 > step 0's 0.3000 + 0.02" in chosen.candidates[1]["why_not"]
    # By default no group may validate worse than step 0 at all: a step better on one group and a hair worse on
    # the other is not handed on (the test set called such a group significantly worse on a demo seed).
    table.append(_entry(20, vsa=(0.8, 1.0, 0.15), ver=(0.5, 1.0, 0.3001)))
    chosen = select_checkpoint(table, "brier")
    assert chosen.step == 0 and chosen.guards.score_margin == 0.0
    assert "ver: brier 0.3001 > step 0's 0.3000 + 0" in chosen.candidates[2]["why_not"]


def test_nll_selection_and_undefined_scores():
    table = [_entry(0, vsa=(0.8, 1.0, 0.20)), _entry(10, vsa=(0.8, 1.0, 0.30)), _entry(20, vsa=(0.8, 1.0, 0.25))]
    table[1]["groups"]["vsa"]["nll"] = 0.1  # lowest log loss, though not lowest Brier
    assert select_checkpoint(table, "brier").step == 0
    assert select_checkpoint(table, "nll").step == 10
    table[1]["groups"]["vsa"]["nll"] = None  # a step whose group states no confidence has no score
    chosen = select_checkpoint(table, "nll")
    assert chosen.step == 0 and chosen.candidates[1]["why_not"] == ["mean nll undefined (a group states no confidence)"]
    with pytest.raises(ValueError, match="strictly proper"):
        select_checkpoint(table, "ece")
    with pytest.raises(ValueError, match="no step-0 entry"):
        select_checkpoint(table[1:], "brier")


def test_a_revalidated_step_counts_once_with_its_latest_entry():
    table = [_entry(0, vsa=(0.8, 1.0, 0.2)), _entry(10, vsa=(0.8, 1.0, 0.1)), _entry(10, vsa=(0.8, 1.0, 0.3))]
    chosen = select_checkpoint(table, "brier")
    assert chosen.step == 0 and [c["step"] for c in chosen.candidates] == [0, 10]


def test_selection_markdown_names_the_step_and_every_candidate():
    table = [_entry(0, vsa=(0.8, 1.0, 0.2)), _entry(10, vsa=(0.7, 1.0, 0.1))]
    record = select_checkpoint(table, "brier").to_dict() | {"val_file": "val.jsonl", "n_val": 64}
    lines = selection_markdown(record)
    assert "**Selected: step 0.**" in lines[2] and "`val.jsonl` (64 prompts, greedy)" in lines[2]
    rows = [line for line in lines if line.startswith(("| 0 ", "| 10 "))]
    assert "**selected**" in rows[0] and "vsa: accuracy 0.7000" in rows[1]


# --- configuration and data -----------------------------------------------------------------------------------


def test_schedule_and_argument_checks():
    check_schedule(20, 20, "steps")
    check_schedule(40, 20, "steps")
    with pytest.raises(ConfigError, match="multiple of save_steps"):
        check_schedule(25, 10, "steps")
    with pytest.raises(ConfigError, match="needs eval_steps"):
        check_schedule(None, 10, "steps")
    with pytest.raises(ConfigError, match="save_strategy: steps"):
        check_schedule(10, 10, "no")
    with pytest.raises(ConfigError, match="select_metric"):
        ValidationArgs(select_metric="ece")
    with pytest.raises(ConfigError, match="val_max_samples"):
        ValidationArgs(val_max_samples=0)


def test_spread_keeps_the_mix_of_a_sorted_file():
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread(["a"] * 3 + ["b"] * 3, 2) == ["a", "b"]
    assert spread([1, 2], None) == [1, 2] and spread([1, 2], 5) == [1, 2]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """SynthEmo-8 and -2 prompts (each image asked twice), split by image into train and val files."""
    root = tmp_path_factory.mktemp("synthemo-val")
    synthemo.build_world(root, synthemo.WorldConfig(n_train=24, n_test=0, tasks=(synthemo.TASK_8, synthemo.TASK_2),
                                                    seed=1))
    train, val = holdout_by_image(read_records(root / "stage3.jsonl"), 16, seed=0)
    write_records(root / "train.jsonl", train)
    write_records(root / "val.jsonl", val)
    return {"root": root, "train": root / "train.jsonl", "val": root / "val.jsonl", "all": root / "stage3.jsonl"}


def test_holdout_keeps_each_image_on_one_side(world):
    train, val = read_records(world["train"]), read_records(world["val"])
    assert len(val) == 16 and len(train) == 32
    assert not {r.image for r in train} & {r.image for r in val}
    assert {r.task for r in val} == {synthemo.TASK_8, synthemo.TASK_2}


def test_validation_images_must_not_be_training_images(world):
    data = DataArgs(str(world["train"]), with_confidence=True)
    train_images = [r.image for r in read_records(world["train"])]
    records = load_validation(ValidationArgs(val_file=str(world["val"]), val_max_samples=6), data, train_images)
    assert len(records) == 6
    with pytest.raises(DataError, match=r"val_file .*: 16 of 48 record\(s\) \(8 image\(s\)\) use images that are "
                                        r"also in train_file"):
        all_records = read_records(world["all"])
        load_validation(ValidationArgs(val_file=str(world["all"])), data, [r.image for r in all_records[:16]])


# --- a harmful stage 3 on the tiny model ------------------------------------------------------------------------


def overconfidence_reward(completions, **kwargs) -> list[float]:
    """Pays 1 for a well-formed completion stating a confidence of 0.9 or more, right or wrong."""
    out = []
    for completion, candidates in zip(completions, kwargs["candidates"], strict=True):
        parsed = parse_response(completion_text(completion), candidates, "strict")
        out.append(float(parsed.valid_format and parsed.confidence is not None and parsed.confidence >= 0.9))
    return out


def _start_model(tiny_model_dir: Path, world: dict[str, Path], out: Path) -> Path:
    """A stage-2-like start: SFT on a short fixed reasoning (distinct words: the 2-layer model loses its place in
    five equal ones), the first candidate as answer, and a confidence of
    0.30 for three records in four and 0.99 for the fourth, so greedy answers state 0.30 and sampling sometimes
    states 0.99 (something for the harmful reward to reinforce)."""
    from trl import SFTConfig

    from emocaliber.train.sft import run_sft

    reasoning = dict(zip(REASONING_PARTS, ("red", "none", "room", "calm", "mood"), strict=True))
    records = [Record.from_dict({**r.to_dict(), "ground_truth": r.candidates[0], "reasoning": reasoning,
                                 "confidence": 0.99 if i % 4 == 3 else 0.30})
               for i, r in enumerate(read_records(world["train"]))]
    write_records(world["root"] / "stage2.jsonl", records)
    args = SFTConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_steps=60,
                     per_device_train_batch_size=8, learning_rate=1e-2, lr_scheduler_type="constant",
                     logging_steps=10, save_strategy="no", gradient_checkpointing=False, max_length=None,
                     disable_tqdm=True, seed=0)
    return run_sft(ModelArgs(str(tiny_model_dir), dtype="float32"),
                   DataArgs(str(world["root"] / "stage2.jsonl"), with_confidence=True), args, stage="stage2")


@pytest.fixture(scope="module")
def harmful_run(tiny_model_dir, world, tmp_path_factory) -> dict[str, Path]:
    from trl import GRPOConfig

    from emocaliber.train.grpo import GRPOScriptArgs, run_grpo

    tmp = tmp_path_factory.mktemp("harmful")
    start = _start_model(tiny_model_dir, world, tmp / "stage2")
    REWARDS["overconfidence"] = overconfidence_reward
    try:
        args = GRPOConfig(output_dir=str(tmp / "stage3"), use_cpu=True, bf16=False, report_to="none", max_steps=6,
                          per_device_train_batch_size=8, num_generations=8, max_completion_length=64,
                          learning_rate=2e-3, lr_scheduler_type="constant", beta=0.0, temperature=1.0,
                          scale_rewards="none", logging_steps=1, save_strategy="steps", save_steps=2, eval_steps=2,
                          save_total_limit=1, gradient_checkpointing=False, disable_tqdm=True, seed=0)
        out = run_grpo(ModelArgs(str(start), dtype="float32"),
                       DataArgs(str(world["train"]), with_confidence=True),
                       GRPOScriptArgs(reward_funcs=["overconfidence"], val_file=str(world["val"]), val_batch_size=16),
                       args)
    finally:
        del REWARDS["overconfidence"]
    return {"start": start, "out": out}


@pytest.mark.slow
def test_harmful_stage3_falls_back_to_the_starting_weights(harmful_run):
    out, start = harmful_run["out"], harmful_run["start"]
    history = [json.loads(line) for line in (out / VAL_LOG).read_text().splitlines()]
    assert [e["step"] for e in history] == [0, 2, 4, 6]
    first, last = history[0]["groups"], history[-1]["groups"]
    # the harm is real: the last step states 0.9 where step 0 stated 0.3, and its mean Brier score is worse
    assert max(last[g]["mean_confidence"] - first[g]["mean_confidence"] for g in first) > 0.5, history
    assert history[-1]["score"] > history[0]["score"] + 0.05, history
    assert all(last[g]["parse_rate"] == 1 for g in last)  # the format held: the score, not a guard, decides
    info = json.loads((out / INFO_FILE).read_text())
    assert info["selection"]["selected_step"] == 0
    assert info["selection"]["weights_from"] == f"the starting model {start}"
    assert file_sha256(out / "model.safetensors") == file_sha256(start / "model.safetensors")
    assert "**Selected: step 0.**" in (out / "README.md").read_text()
    # the last step's checkpoint was kept by the trainer's rotation, but its weights are not the output's
    assert file_sha256(out / "checkpoint-6" / "model.safetensors") != file_sha256(start / "model.safetensors")


@pytest.mark.slow
def test_validation_log_has_every_metric_per_group(harmful_run):
    out = harmful_run["out"]
    history = [json.loads(line) for line in (out / VAL_LOG).read_text().splitlines()]
    for entry in history:
        assert set(entry["groups"]) == {tasks.SYNTH_VSA, tasks.SYNTH_VER}
        for metrics in [*entry["groups"].values(), entry["overall"]]:
            assert set(metrics) == set(GROUP_METRICS)
            assert metrics["parse_rate"] is not None and 0 <= metrics["parse_rate"] <= 1
        assert entry["groups"][tasks.SYNTH_VSA]["n"] + entry["groups"][tasks.SYNTH_VER]["n"] == entry["n"] == 16
        assert math.isfinite(entry["seconds"])
    # the same figures reached the trainer's log (and so any report_to tracker)
    logged = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "val/score" in h]
    assert [h["step"] for h in logged] == [0, 2, 4, 6]
    assert logged[0]["val/synth_ver/brier"] == pytest.approx(history[0]["groups"][tasks.SYNTH_VER]["brier"])
    assert all(f"val/synth_vsa/{m}" in logged[1] for m in ("accuracy", "parse_rate", "ece", "brier", "nll"))
    # the training logs of those steps were not split by the validation log
    train_logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in h]
    assert [h["step"] for h in train_logs] == [1, 2, 3, 4, 5, 6]


def test_run_ends_when_the_last_logging_window_has_undefined_metrics(tiny_model_dir, tmp_path):
    """One step with logging_steps 2: the step's metrics reach the final report unlogged, and the random model's
    rollouts state no confidence, so TRL reports rollout/confidence_mean as None; the run must still save."""
    from trl import GRPOConfig

    from emocaliber.train.grpo import GRPOScriptArgs, run_grpo

    root = tmp_path / "world"
    synthemo.build_world(root, synthemo.WorldConfig(n_train=2, n_test=0, tasks=(synthemo.TASK_8,), seed=1))
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", max_steps=1,
                      per_device_train_batch_size=4, num_generations=4, max_completion_length=8, logging_steps=2,
                      save_strategy="no", gradient_checkpointing=False, disable_tqdm=True, seed=0)
    out = run_grpo(ModelArgs(str(tiny_model_dir), dtype="float32"),
                   DataArgs(str(root / "stage3.jsonl"), with_confidence=True), GRPOScriptArgs(), args)
    results = json.loads((out / "train_results.json").read_text())
    assert "rollout/confidence_mean" not in results and results["train_samples"] == 2
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_validation_does_not_change_the_rollouts(tiny_model_dir, world, tmp_path):
    """The generation backend seeds torch per batch; validation restores the random state, so the same seed draws
    the same rollouts (same lengths, entropies and losses) with and without validation."""
    from trl import GRPOConfig

    from emocaliber.train.grpo import GRPOScriptArgs, run_grpo

    logs = []
    for name, val_file in (("plain", None), ("validated", str(world["val"]))):
        args = GRPOConfig(output_dir=str(tmp_path / name), use_cpu=True, bf16=False, report_to="none", max_steps=2,
                          per_device_train_batch_size=8, num_generations=8, max_completion_length=12,
                          learning_rate=1e-3, logging_steps=1, save_strategy="steps", save_steps=1, eval_steps=1,
                          gradient_checkpointing=False, disable_tqdm=True, seed=0)
        out = run_grpo(ModelArgs(str(tiny_model_dir), dtype="float32"),
                       DataArgs(str(world["train"]), with_confidence=True),
                       GRPOScriptArgs(val_file=val_file, select_metric="none"), args)
        logs.append([{k: h[k] for k in ("completions/mean_length", "entropy", "loss")}
                     for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in h])
    assert (tmp_path / "validated" / VAL_LOG).is_file() and not (tmp_path / "plain" / VAL_LOG).exists()
    assert len(logs[0]) == 2 and logs[0] == logs[1]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_validation_table(tiny_model_dir, world, tmp_path):
    """Stop after 2 steps, resume to 3: the table keeps steps 0-2 from the first run (step 0 is not redone) and
    adds step 3; the selection sees all four."""
    from trl import GRPOConfig

    from emocaliber.train.grpo import GRPOScriptArgs, run_grpo

    out = tmp_path / "out"
    for steps in (2, 3):
        args = GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_steps=steps,
                          per_device_train_batch_size=8, num_generations=8, max_completion_length=8,
                          logging_steps=1, save_strategy="steps", save_steps=1, eval_steps=1,
                          resume_from_checkpoint="auto", gradient_checkpointing=False, disable_tqdm=True, seed=0)
        run_grpo(ModelArgs(str(tiny_model_dir), dtype="float32"), DataArgs(str(world["train"]), with_confidence=True),
                 GRPOScriptArgs(val_file=str(world["val"]), val_max_samples=4), args)
    history = [json.loads(line) for line in (out / VAL_LOG).read_text().splitlines()]
    assert [e["step"] for e in history] == [0, 1, 2, 3]
    selection = json.loads((out / INFO_FILE).read_text())["selection"]
    assert [c["step"] for c in selection["candidates"]] == [0, 1, 2, 3] and selection["selected_step"] == 0


@pytest.mark.parametrize(("config", "val_file"), [("qwen2.5-vl-7b", "data/released/stage3_val.jsonl"), ("tiny", None)])
def test_recipes_carry_validation_and_selection(config, val_file):
    from trl import GRPOConfig, TrlParser

    from emocaliber.train.configs import parse_args_and_config
    from emocaliber.train.grpo import GRPOScriptArgs

    parser = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig))
    path = Path(__file__).resolve().parents[1] / "recipes" / config / "stage3.yaml"
    _, data, script, args = parse_args_and_config(parser, ["--config", str(path), "--use_cpu", "true"])
    assert script.val_file == val_file and script.val_max_samples and script.select_metric == "brier"
    assert (script.select_accuracy_margin, script.select_min_parse_rate) == (0.01, 0.95)
    check_schedule(args.eval_steps, args.save_steps, args.save_strategy)  # every validated step is saved
    if val_file:
        assert Path(data.train_file).name == "stage3_train.jsonl"  # the validation images are held out of it
