"""Confidence credit: the confidence value's tokens get the calibration term's advantage, the rest the full one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _grpo_utils import small_world
from trl import GRPOConfig

from emocaliber.prompts import format_target
from emocaliber.records import REASONING_PARTS
from emocaliber.rewards import calibration_reward_log
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs
from emocaliber.train.credit import group_centred, token_advantages, value_span_mask
from emocaliber.train.grpo import GRPOScriptArgs, build_trainer

REASONING = {p: f"{p} words" for p in REASONING_PARTS}


def test_value_span_mask_marks_the_pieces_of_the_value_only():
    pieces = ["<answer>", "fear", "</answer>", "<conf", "idence>", "0.", "8", "5", "</confidence>", "<eos>"]
    assert value_span_mask(pieces) == [False] * 5 + [True] * 3 + [False] * 2
    # a piece straddling the tag and the value counts; the last confidence block is the one read
    assert value_span_mask(["<confidence>0.1</confidence>", "<confidence>0", ".9", "</confidence>"]) == [
        False, True, True, False]
    assert value_span_mask(["<confidence>", "0.7"]) == [False, True]  # unclosed: to the end
    assert value_span_mask(["no", " tag"]) == [False, False]
    assert value_span_mask(["<confidence>", "</confidence>", ""]) == [False, False, False]


def test_group_centred_and_token_advantages():
    values = torch.tensor([1.0, 3.0, float("nan"), 0.0, 2.0, 4.0])
    assert group_centred(values, 3).tolist() == [-1.0, 1.0, 0.0, -2.0, 0.0, 2.0]
    full, cal = torch.tensor([0.5, -0.5]), torch.tensor([0.1, -0.2])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    expected = torch.tensor([[0.5, 0.1, 0.1], [-0.2, -0.5, -0.5]])
    assert torch.allclose(token_advantages(full, cal, mask), expected)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return small_world(tmp_path_factory.mktemp("synthemo-credit"))


def _config(out: Path, **kw) -> GRPOConfig:
    return GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, report_to="none", gradient_checkpointing=False,
                      scale_rewards="none", **kw)


@pytest.mark.parametrize(("credit", "credit_weight"),
                         [("calibration", None), ("calibration", 1.0), ("confidence_only", 1.0)])
def test_trainer_gives_the_confidence_tokens_the_calibration_advantage(tiny_model_dir, train_file, tmp_path,
                                                                        credit, credit_weight):
    trainer = build_trainer(ModelArgs(str(tiny_model_dir), dtype="float32"),
                            DataArgs(str(train_file), with_confidence=True),
                            GRPOScriptArgs(confidence_credit=credit, confidence_credit_weight=credit_weight),
                            _config(tmp_path))
    trainer.model.train()
    row = trainer.train_dataset[0]
    wrong = next(c for c in row["candidates"] if c != row["ground_truth"])
    texts = [format_target(REASONING, row["ground_truth"], 0.8), format_target(REASONING, wrong, 0.3),
             format_target(REASONING, row["ground_truth"], 0.05),
             # out of format (a part's tag misspelt) but with a confidence: the rule gives it its worst score
             format_target(REASONING, wrong, 0.95).replace("<human>", "<humn>")]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    trainer._calculate_rewards([row] * 4, [row["prompt"]] * 4, completions, [[0]] * 4)

    tokenizer = trainer.processing_class.tokenizer
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows)) + 2
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    full = torch.tensor([0.4, -0.3, 0.2, -0.3])
    out = trainer._calibration_credit({"completion_ids": ids, "completion_mask": mask, "advantages": full})

    assert out.shape == ids.shape
    s = torch.tensor(calibration_reward_log(completions=completions, ground_truth=[row["ground_truth"]] * 4,
                                            candidates=[row["candidates"]] * 4))
    reward_weight = trainer.reward_weights[trainer.reward_func_names.index("calibration_reward_log")]
    assert reward_weight == 0.25  # the default reward's; confidence_credit_weight leaves it as it is
    weight = reward_weight if credit_weight is None else credit_weight
    # Centred over the three well-formed completions; the broken one's confidence tokens get no advantage.
    scored = s[:3]
    expected_cal = torch.cat([weight * (scored - scored.mean()), torch.zeros(1, dtype=s.dtype)])
    assert s[3] < scored.min()
    for i, r in enumerate(rows):
        pieces = [tokenizer.decode([t]) for t in r]
        span = value_span_mask(pieces)
        assert "".join(p for p, m in zip(pieces, span) if m) == texts[i].split("<confidence>")[1].split("<")[0]
        # Under confidence_only every other token (the answer, the reasoning, padding) has no advantage.
        rest = full[i] if credit == "calibration" else 0.0
        for j in range(width):
            want = expected_cal[i] if j < len(r) and span[j] else rest
            assert out[i, j].item() == pytest.approx(float(want), abs=1e-6)


def test_confidence_credit_config_errors(tiny_model_dir, train_file, tmp_path):
    model, data = ModelArgs(str(tiny_model_dir), dtype="float32"), DataArgs(str(train_file), with_confidence=True)
    with pytest.raises(ConfigError, match="confidence_credit"):
        GRPOScriptArgs(confidence_credit="tokens")
    for bad in ({"confidence_credit_weight": 1.0}, {"confidence_credit": "calibration", "confidence_credit_weight": 0}):
        with pytest.raises(ConfigError, match="confidence_credit_weight"):
            GRPOScriptArgs(**bad)
    with pytest.raises(ConfigError, match="needs a calibration term"):
        build_trainer(model, data, GRPOScriptArgs(reward_funcs=["release"], confidence_credit="calibration"),
                      _config(tmp_path))
    with pytest.raises(ConfigError, match="scale_rewards: none"):
        build_trainer(model, data, GRPOScriptArgs(confidence_credit="calibration"),
                      GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                                 num_generations=4, max_steps=1, report_to="none", scale_rewards="group"))


def test_the_confidence_tokens_also_learn_from_the_ranking_reward_on_blends(tiny_model_dir, train_file, tmp_path):
    """With blends and the ranking reward under ``confidence_only``, the confidence tokens' advantage is the
    calibration term's plus the ranking term's (each at its weight, centred over the group): the ranking reward is
    a score of the stated confidence, and without it here GRPO would train exactly as if it were off."""
    from emocaliber.blends import main as blends_main

    blends_main(["--records", str(train_file), "--image-root", str(train_file.parent), "--out",
                 str(tmp_path / "blends"), "--n", "4", "--seed", "0"])
    trainer = build_trainer(ModelArgs(str(tiny_model_dir), dtype="float32"),
                            DataArgs(str(train_file), with_confidence=True),
                            GRPOScriptArgs(confidence_credit="confidence_only", confidence_credit_weight=1.0,
                                           blend_file=str(tmp_path / "blends" / "blends.jsonl"), blend_share=0.5,
                                           blend_rank_weight=0.5), _config(tmp_path / "t"))
    trainer.model.train()
    row = next(r for r in trainer.train_dataset if r["blend"] is not None)
    trainer.reward_funcs[-1].table = {s: 0.6 for s in row["blend"]["sources"]}  # both sources stated 0.6
    source = row["blend"]["labels"][0]
    texts = [format_target(REASONING, source, c) for c in (0.9, 0.45, 0.3, 0.7)]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    rewards = trainer._calculate_rewards([row] * 4, [row["prompt"]] * 4, completions, [[0]] * 4)
    names = trainer.reward_func_names
    rank = rewards[:, names.index("blend_rank_reward")]
    # hinge against 0.6 with delta 0.1, twice: 0.9 -> 2 x 0.4, 0.45 -> 0, 0.3 -> 0, 0.7 -> 2 x 0.2 (weight 1 inside)
    assert rank.tolist() == pytest.approx([-0.8, 0.0, 0.0, -0.4])
    cal = rewards[:, names.index("calibration_reward_log")]

    tokenizer = trainer.processing_class.tokenizer
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    out = trainer._calibration_credit({"completion_ids": ids, "completion_mask": mask,
                                       "advantages": torch.zeros(4)})
    expected = 1.0 * (cal - cal.mean()) + 0.5 * (rank - rank.mean())
    for i, r in enumerate(rows):
        span = value_span_mask([tokenizer.decode([t]) for t in r])
        j = span.index(True)
        assert out[i, j].item() == pytest.approx(expected[i].item(), abs=1e-6)
    # the most confident blend answer is pushed down more than the calibration term alone would push it
    first = value_span_mask([tokenizer.decode([t]) for t in rows[0]]).index(True)
    assert out[0, first].item() < (cal[0] - cal.mean()).item()
