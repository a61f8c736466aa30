"""Stage 3 with vLLM rollouts, on the real vLLM up to the model itself (tests/_vllm_utils.py).

The trainer is built with ``use_vllm`` in colocate mode, so TRL constructs its engine, its ``SamplingParams`` and
its prompts exactly as on a GPU node; :class:`CPULLM` runs vLLM's argument checks and its Qwen2.5-VL multimodal
processor on them and makes up only the completions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _grpo_utils import small_world
from _vllm_utils import CPULLM, image_token_count, use_cpu_llm
from trl import GRPOConfig

from emocaliber.prompts import format_target
from emocaliber.records import REASONING_PARTS
from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs
from emocaliber.train.grpo import GRPOScriptArgs, build_trainer, check_vllm_pixel_bounds, collapse_image_runs

IMAGE = 7  # any id stands for the image token in the unit test


# Tiny models on a shared CPU run many times faster on one thread than on one per core (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_leaked_process_group():
    """TRL's colocate mode writes RANK, WORLD_SIZE and MASTER_* into os.environ and starts a one-process group
    on MASTER_PORT. Left behind, every later test's training subprocess inherits them and fails to bind that port
    (EADDRINUSE), so each test here gives both back."""
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {name: os.environ.get(name) for name in names}
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return small_world(tmp_path_factory.mktemp("synthemo-grpo-vllm"), n_train=4)


@pytest.fixture
def cpu_llm(monkeypatch):
    return use_cpu_llm(monkeypatch)


def _config(out: Path, **kw) -> GRPOConfig:
    return GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=16, max_steps=1, report_to="none", gradient_checkpointing=False,
                      use_vllm=True, vllm_mode="colocate", **kw)


def test_collapse_image_runs_keeps_one_placeholder_per_image():
    assert collapse_image_runs([1, IMAGE, IMAGE, IMAGE, 2, IMAGE, IMAGE, 3], IMAGE) == [1, IMAGE, 2, IMAGE, 3]
    assert collapse_image_runs([IMAGE, 4, IMAGE], IMAGE) == [IMAGE, 4, IMAGE]
    assert collapse_image_runs([], IMAGE) == []


def test_colocated_rollouts_see_each_image_once(cpu_llm, tiny_model_dir, train_file, tmp_path):
    """The ids TRL hands vLLM in colocate mode expand, in vLLM's own processor, to exactly the image tokens of the
    training forward pass; every other token of the prompt is the same too."""
    answer = format_target({p: "words" for p in REASONING_PARTS}, "awe", 0.7)
    CPULLM.answer = staticmethod(lambda prompt, engine_input, k: answer)
    trainer = build_trainer(ModelArgs(str(tiny_model_dir), dtype="float32"), DataArgs(str(train_file), with_confidence=True),
                            GRPOScriptArgs(), _config(tmp_path))
    (engine,) = cpu_llm
    assert engine.kwargs["model"] == str(tiny_model_dir)  # TRL's own engine arguments, accepted by vLLM
    trainer._last_loaded_step = trainer.state.global_step  # weight sync copies into the engine's model: none here
    trainer.model.train()
    inputs = [trainer.train_dataset[i] for i in range(4)]
    output = trainer._generate_and_score_completions(inputs)

    image_token_id = trainer.processing_class.image_token_id
    ((_, params, engine_inputs),) = engine.calls
    assert len(engine_inputs) == 4 and all(p.n == 1 for p in params)  # colocate: one sample per prompt row
    trained = [ids[mask.bool()].tolist() for ids, mask in zip(output["prompt_ids"], output["prompt_mask"])]
    grid = output["image_grid_thw"]
    for row, (engine_input, ids) in enumerate(zip(engine_inputs, trained, strict=True)):
        seen = image_token_count(engine_input["prompt_token_ids"], image_token_id)
        assert seen == image_token_count(ids, image_token_id) == int(grid[row].prod()) // 4
        assert engine_input["prompt_token_ids"] == ids
        (placeholder,) = engine_input["mm_placeholders"]["image"]
        assert placeholder.length == seen

    # Server mode keeps the expanded runs: TRL places the server's image features on them. (The server client is
    # replaced by a recorder: there is no server to reach here.)
    handed = []
    trainer.vllm_mode = "server"
    trainer.vllm_generation.generate = lambda prompts, **kw: handed.append(prompts) or (None, [[1]], [[[0.0]]], None)
    trainer._generate_single_turn([trained[0]], [[inputs[0]["images"][0]]], {}, 1)
    assert handed == [[trained[0]]]


def test_use_vllm_refuses_pixel_bounds_the_checkpoint_did_not_save(tiny_model_dir, train_file, tmp_path):
    """vLLM's image processor reads the bounds saved with the checkpoint (3136-12544 for the tiny one)."""
    config = _config(tmp_path)
    expected = r"use_vllm: the config's max_pixels=6272 is not what .* saved \(max_pixels=12544\).*save_pretrained"
    with pytest.raises(ConfigError, match=expected):
        build_trainer(ModelArgs(str(tiny_model_dir), dtype="float32", max_pixels=6272), DataArgs(str(train_file), with_confidence=True),
                      GRPOScriptArgs(), config)
    for same in ({}, {"min_pixels": 3136}, {"min_pixels": 3136, "max_pixels": 12544}):
        check_vllm_pixel_bounds(str(tiny_model_dir), ModelArgs(str(tiny_model_dir), **same), config)
    # without vLLM the training processor is the only one, so any bounds are fine
    without = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    check_vllm_pixel_bounds(str(tiny_model_dir), ModelArgs(str(tiny_model_dir), max_pixels=6272), without)


def test_no_process_group_or_launch_variables_outlive_a_test():
    """Runs after the colocate test (file order): what that test started is gone."""
    assert not torch.distributed.is_initialized()
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT"} & set(os.environ)
