"""Stage 3 (GRPO) on TRL: reward wiring without drift, rollout monitoring, config mapping, a short run and resume."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from _grpo_utils import QWEN_CONFIG, RECIPE, TINY_CONFIG, log_history, recipe_args, small_world, step_logs
from trl import GRPOConfig, TrlParser

from emocaliber.metrics import ece
from emocaliber.prompts import format_target
from emocaliber.records import REASONING_PARTS
from emocaliber.rewards import DEFAULT_REWARD, REWARDS, WeightedReward
from emocaliber.train.checkpoint import missing_parts
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs
from emocaliber.train.grpo import (
    GRPOScriptArgs,
    Rollout,
    RolloutMonitor,
    build_trainer,
    curve_markdown,
    judge_rollouts,
    reward_curve,
    reward_wiring,
)

REASONING = {p: f"{p} words" for p in REASONING_PARTS}


# Tiny models on a shared CPU run many times faster on one thread than on one per core (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return small_world(tmp_path_factory.mktemp("synthemo-grpo"))


def _config(out: Path, **kw) -> GRPOConfig:
    return GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, per_device_train_batch_size=8, num_generations=8,
                      max_completion_length=8, max_steps=1, report_to="none", gradient_checkpointing=False, **kw)


def _handwritten(candidates: list[str], truth: str) -> list[str]:
    wrong = next(c for c in candidates if c != truth)
    return [
        format_target(REASONING, truth, 0.8),                        # valid, correct
        format_target(REASONING, wrong, 0.3),                        # valid, wrong
        format_target(REASONING, truth, 0.05),                       # valid, correct, low confidence
        format_target(REASONING, wrong, 0.95),                       # valid, confidently wrong
        f"<answer>{truth}</answer><confidence>0.70</confidence>",    # no reasoning: broken format
        format_target(REASONING, truth),                             # no confidence: broken format
        format_target(REASONING, "not-a-label", 0.6),                # answer outside the candidates
        "",                                                          # nothing at all
    ]


@pytest.mark.parametrize("name", sorted({DEFAULT_REWARD, "release", "calibrated_log"}))
def test_trainer_rewards_equal_the_library_reward(name, tiny_model_dir, train_file, tmp_path):
    """Hand-written completions through the trainer's own reward path (the callables and weights given to
    GRPOTrainer, summed as TRL sums them) give exactly the library's reward."""
    trainer = build_trainer(ModelArgs(str(tiny_model_dir), dtype="float32"),
                            DataArgs(str(train_file), with_confidence=True), GRPOScriptArgs(reward_funcs=[name]),
                            _config(tmp_path))
    trainer.model.train()  # what the trainer is in while generating training rollouts
    row = trainer.train_dataset[0]
    completions_text = _handwritten(row["candidates"], row["ground_truth"])
    inputs = [row] * len(completions_text)
    prompts = [row["prompt"]] * len(completions_text)
    completions = [[{"role": "assistant", "content": t}] for t in completions_text]
    per_func = trainer._calculate_rewards(inputs, prompts, completions, [[0]] * len(completions))
    total = (per_func * trainer.reward_weights.unsqueeze(0)).nansum(dim=1).tolist()

    library = REWARDS[name](completions=completions, ground_truth=[row["ground_truth"]] * len(completions),
                            candidates=[row["candidates"]] * len(completions))
    assert total == pytest.approx(library, abs=1e-5)
    if isinstance(REWARDS[name], WeightedReward) and len(trainer.reward_funcs) > 1:
        assert [f.__name__ for f in trainer.reward_funcs] == [f.__name__ for f in REWARDS[name].components()[0]]
    if name == "release":  # the release's formula (paper section 5.3): 1 + i + 2 (i ln c + (1 - i) ln(1 - c))
        expected = [2 + 2 * math.log(0.8), 1 + 2 * math.log(0.7), 2 + 2 * math.log(0.05), 1 + 2 * math.log(0.05),
                    -5.0, -5.0, 1 + 2 * math.log(0.4), -5.0]
        assert total == pytest.approx(expected, abs=1e-5)

    # What the monitor logs for the same completions
    extra = dict(trainer._pending_extra_logs)
    assert extra["label"][:4] == [row["ground_truth"], completions_text[1].split("<answer>")[1].split("<")[0],
                                  row["ground_truth"], completions_text[3].split("<answer>")[1].split("<")[0]]
    assert extra["confidence"][:4] == pytest.approx([0.8, 0.3, 0.05, 0.95])
    # a non-candidate answer keeps a valid format (it is simply wrong); missing reasoning or confidence does not
    assert extra["valid"] == [True, True, True, True, False, False, True, False]
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith("rollout/")}
    assert metrics["rollout/parse_rate"] == pytest.approx(5 / 8)
    assert metrics["rollout/accuracy"] == pytest.approx(4 / 8)  # answers naming the truth, format or not


def test_reward_wiring_splits_weighted_rewards_and_merges_repeats():
    weighted = REWARDS["calibrated_log"]
    funcs, weights = reward_wiring(["calibrated_log"], [2.0])
    comp_funcs, comp_weights = weighted.components()
    assert funcs == comp_funcs and weights == pytest.approx([2 * w for w in comp_weights])

    funcs, weights = reward_wiring(["calibrated_log", "format"], [1.0, 0.5])
    assert funcs.count(REWARDS["format"]) == 1
    assert weights[funcs.index(REWARDS["format"])] == pytest.approx(comp_weights[0] + 0.5)

    funcs, weights = reward_wiring(["calibrated_log"], split_components=False)
    assert funcs == [weighted] and weights == [1.0]
    assert reward_wiring(["release"]) == ([REWARDS["release"]], [1.0])
    with pytest.raises(ConfigError, match="reward_weights"):
        reward_wiring(["release"], [1.0, 2.0])
    with pytest.raises(ConfigError, match="unknown"):
        GRPOScriptArgs(reward_funcs=["no_such_reward"])


def test_judge_rollouts_reads_strings_and_messages():
    cands = ["awe", "fear"]
    texts = [format_target(REASONING, "fear", 0.9), [{"role": "assistant", "content": format_target(REASONING, "awe", 0.4)}],
             "<answer>fear</answer>"]
    got = judge_rollouts(texts, [cands] * 3, ["fear"] * 3)
    assert got == [Rollout("fear", 0.9, True, True), Rollout("awe", 0.4, True, False), Rollout("fear", None, False, True)]


def test_rollout_monitor_batch_metrics_and_running_ece_window():
    monitor = RolloutMonitor(window=4, n_bins=10)
    first = [Rollout("a", 0.9, True, True), Rollout("b", 0.9, True, False),
             Rollout("a", 0.6, True, True), Rollout("a", 0.6, True, True)]
    m = monitor.update(first, group_size=2)
    assert m["rollout/parse_rate"] == 1.0 and m["rollout/accuracy"] == 0.75
    assert m["rollout/confidence_mean"] == pytest.approx(0.75)
    assert m["rollout/confidence_group_std"] == pytest.approx(0.0)  # each group states one value
    # bins: 0.9 -> accuracy 0.5 (gap 0.4, weight 1/2); 0.6 -> accuracy 1 (gap 0.4, weight 1/2)
    assert m["rollout/ece"] == pytest.approx(0.4)

    second = [Rollout("a", 0.05, True, False), Rollout(None, None, False, False),
              Rollout("b", 0.35, True, True), Rollout("b", 0.45, False, True)]
    m = monitor.update(second, group_size=2)
    assert m["rollout/parse_rate"] == 0.5 and m["rollout/accuracy"] == 0.5
    assert m["rollout/confidence_mean"] == pytest.approx((0.05 + 0.35 + 0.45) / 3)
    assert m["rollout/low_confidence_rate"] == pytest.approx(1 / 3)
    assert m["rollout/confidence_group_std"] == pytest.approx(0.05)  # only the second group has two values
    # the window keeps the last four valid rollouts: (0.6, 1), (0.6, 1), (0.05, 0), (0.35, 1)
    assert m["rollout/ece"] == pytest.approx(ece([0.6, 0.6, 0.05, 0.35], [1, 1, 0, 1], n_bins=10))
    assert m["rollout/ece"] == pytest.approx((2 * 0.4 + 0.05 + 0.65) / 4)

    monitor.reset()
    m = monitor.update([Rollout(None, None, False, False)] * 2, group_size=2)
    assert math.isnan(m["rollout/ece"]) and math.isnan(m["rollout/confidence_mean"])


def test_reward_curve_averages_ranges_of_steps():
    history = [{"step": s, "reward": float(s), "rollout/parse_rate": 0.25 * s, "rollout/ece": s / 10,
                "rollout/confidence_mean": None} for s in (4, 1, 3, 2, 5)] + [{"step": 5, "train_runtime": 1.0}]
    rows = reward_curve(history, bucket=2)
    assert [r["steps"] for r in rows] == ["1-2", "3-4", "5-5"]
    assert [r["mean reward"] for r in rows] == [1.5, 3.5, 5.0]
    assert [r["parse rate"] for r in rows] == [0.375, 0.875, 1.25]
    assert [r["ece"] for r in rows] == [0.2, 0.4, 0.5]  # the running ECE at each range's last step
    assert all(math.isnan(r["mean confidence"]) and math.isnan(r["accuracy"]) for r in rows)
    table = curve_markdown(rows).splitlines()
    assert table[0].startswith("| steps | mean reward | parse rate |") and len(table) == 2 + 3
    assert table[2].startswith("| 1-2 | 1.500 | 0.375 |")


def test_config_errors_name_the_setting(tiny_model_dir, train_file, tmp_path):
    model = ModelArgs(str(tiny_model_dir), dtype="float32")
    with pytest.raises(ConfigError, match="with_confidence"):
        build_trainer(model, DataArgs(str(train_file), with_confidence=False), GRPOScriptArgs(), _config(tmp_path))
    with pytest.raises(ConfigError, match="does nothing in GRPO; .* use confidence_credit"):
        build_trainer(model, DataArgs(str(train_file), with_confidence=True, confidence_loss_weight=2.0),
                      GRPOScriptArgs(), _config(tmp_path))
    with pytest.raises(ConfigError, match="reward_weights"):
        build_trainer(model, DataArgs(str(train_file), with_confidence=True), GRPOScriptArgs(reward_funcs=["brier"]),
                      _config(tmp_path, reward_weights=[1.0, 1.0]))


def _parse(config: Path, *extra: str):
    from emocaliber.train.configs import parse_args_and_config

    parser = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig))
    return parse_args_and_config(parser, ["--config", str(config), *extra])


def test_qwen_recipe_maps_the_release_settings():
    """The release's verl settings (paper section 4), as the 7B config gives them to TRL on 8 GPUs."""
    _, data, script, args = _parse(QWEN_CONFIG, "--use_cpu", "true")  # bf16 needs a GPU or use_cpu to validate
    gpus = 8
    assert args.num_generations == 8
    assert args.per_device_train_batch_size * gpus * args.gradient_accumulation_steps == 32 * 8  # mini-batch 32 prompts
    assert args.generation_batch_size == 64 * 8  # train_batch_size 64 prompts
    assert args.per_device_train_batch_size == 4  # micro-batch 4 per GPU
    assert (args.learning_rate, args.beta, args.temperature, args.max_completion_length) == (1e-6, 0.01, 1.0, 2048)
    assert args.scale_rewards == "none" and args.loss_type == "bnpo" and args.num_train_epochs == 1
    assert args.epsilon == 0.2 and args.delta == 3.0 and args.entropy_coef == 0.0
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert script.reward_funcs == ["release"] and data.with_confidence


def test_tiny_recipe_runs_on_cpu_without_vllm():
    _, data, script, args = _parse(TINY_CONFIG)
    assert args.use_cpu and not args.bf16 and not args.use_vllm
    assert script.reward_funcs == [DEFAULT_REWARD] and data.with_confidence
    assert args.resume_from_checkpoint == "auto"


def test_recipe_help_lists_stage3_options(capsys):
    with pytest.raises(SystemExit) as done:
        _load_recipe().main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in ("--reward_funcs", "--rollout_window", "--num_generations", "--train_file", "--beta"):
        assert option in out


def _load_recipe():
    spec = importlib.util.spec_from_file_location("stage3_grpo", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_trains_logs_components_and_resumes(tiny_model_dir, train_file, tmp_path):
    """Two GRPO steps through the recipe: per-component rewards, rollout metrics and parsed completions are logged,
    checkpoints are self-contained, and ``resume_from_checkpoint: auto`` continues from the last one."""
    import pandas as pd

    recipe = _load_recipe()
    out = tmp_path / "stage3"
    recipe.main(recipe_args(tiny_model_dir, train_file, out, steps=2, log_completions="true", beta="0.04"))
    logs = step_logs(out)
    assert [h["step"] for h in logs] == [1, 2]
    names = [f.__name__ for f in reward_wiring([DEFAULT_REWARD])[0]]
    for key in [f"rewards/{n}/{s}" for n in names for s in ("mean", "std")] + [
            "reward", "frac_reward_zero_std", "kl", "rollout/parse_rate", "rollout/accuracy"]:
        assert all(key in h for h in logs), key
    assert missing_parts(out) == [] and missing_parts(out / "checkpoint-2") == []
    table = pd.read_parquet(out / "completions" / "completions_00002.parquet")
    assert {"label", "confidence", "valid", *names} <= set(table.columns) and len(table) == 8

    recipe.main(recipe_args(tiny_model_dir, train_file, out, steps=3, save_steps=10, beta="0.04"))
    logs = step_logs(out)
    assert [h["step"] for h in logs] == [1, 2, 3]  # steps 1-2 come from checkpoint-2's state, 3 is new
    assert [h for h in log_history(out) if "train_runtime" in h]
    assert np.isfinite([h["reward"] for h in logs]).all()


def test_lora_run_saves_an_adapter_with_the_base_as_reference(tiny_model_dir, train_file, tmp_path):
    """With LoRA the KL reference is the adapter-free model (no second copy); the output is an adapter."""
    out = tmp_path / "stage3-lora"
    _load_recipe().main(recipe_args(tiny_model_dir, train_file, out, steps=1, use_lora="true", beta="0.04"))
    assert (out / "adapter_config.json").is_file() and missing_parts(out) == []
    assert step_logs(out)[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # a fresh adapter is the identity


def test_blend_prompts_and_the_rank_reward_train_and_log(tiny_model_dir, train_file, tmp_path):
    """Stage 3 with blends mixed in at a share and the ranking reward: it is logged as its own finite component,
    and the blend rows reach the rewards (the ranking term is not identically 0 only if they do)."""
    from emocaliber.blends import main as blends_main

    blends_main(["--records", str(train_file), "--image-root", str(train_file.parent), "--out",
                 str(tmp_path / "blends"), "--n", "8", "--seed", "0"])
    out = tmp_path / "stage3"
    _load_recipe().main(recipe_args(tiny_model_dir, train_file, out, steps=2, blend_file=tmp_path / "blends" /
                                    "blends.jsonl", blend_share=0.5, blend_rank_weight=0.5,
                                    max_completion_length=16))
    logs = step_logs(out)
    assert all(math.isfinite(h["rewards/blend_rank_reward/mean"]) for h in logs)
    info = (out / "emocaliber_training.json").read_text()
    assert "blend_rank_reward" in info

    trainer = build_trainer(ModelArgs(str(tiny_model_dir), dtype="float32"), DataArgs(str(train_file),
                            with_confidence=True), GRPOScriptArgs(blend_file=str(tmp_path / "blends" / "blends.jsonl"),
                            blend_share=0.5, blend_rank_weight=0.5), _config(tmp_path / "t"))
    blends = [row for row in trainer.train_dataset["blend"] if row is not None]
    assert len(blends) == 8 and len(trainer.train_dataset) == 16  # 0.5 of the prompts
    rank = trainer.reward_funcs[-1]
    source = blends[0]["sources"][0]
    rows = [r for r in trainer.train_dataset if r["blend"] is not None][:1]
    # a blend stating 0.9 against a source the table holds at 0.5: both hinges bite, the term is negative
    rank.table = {s: 0.5 for s in blends[0]["sources"]}
    value = rank([_handwritten(rows[0]["candidates"], rows[0]["ground_truth"])[3]], candidates=[rows[0]["candidates"]],
                 id=[rows[0]["id"]], blend=[rows[0]["blend"]])
    assert source in rank.table and value[0] < 0


def test_blend_settings_are_checked():
    with pytest.raises(ConfigError, match="blend_file"):
        GRPOScriptArgs(blend_rank_weight=0.5)
    with pytest.raises(ConfigError, match="blend_share"):
        GRPOScriptArgs(blend_file="x.jsonl", blend_share=1.0)
