"""Stage 1 and 2 as users launch them on a node: ``accelerate launch --config_file recipes/accelerate_configs/...``
with two CPU processes (gloo). The shipped GPU configs are adapted only where a CPU run must differ: two
processes, no mixed precision, and (DeepSpeed) use_cpu. Each run is a few steps of the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from _sft_utils import (
    RECIPES,
    build_sft_world,
    generate_from_image,
    run_script,
    tiny_recipe_config,
    write_yaml,
)

from emocaliber.modeling import load_model_and_processor
from emocaliber.records import read_records
from emocaliber.train.checkpoint import INFO_FILE, missing_parts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_sft_world(tmp_path_factory.mktemp("sft-dist-world"))


def cpu_accelerate_config(name: str, tmp_path: Path) -> Path:
    """recipes/accelerate_configs/<name>.yaml for two CPU processes.

    DeepSpeed: ``use_cpu: true`` (DeepSpeed's CPU accelerator with gloo). DDP: ``use_cpu`` must stay false in the
    accelerate config (with true, accelerate's simple launcher starts one process); the recipe's ``use_cpu: true``
    then makes each process a CPU rank (MULTI_CPU, gloo).
    """
    config = yaml.safe_load((RECIPES / "accelerate_configs" / f"{name}.yaml").read_text())
    config.update(num_processes=2, num_machines=1, machine_rank=0, mixed_precision="no",
                  use_cpu=config["distributed_type"] == "DEEPSPEED")
    config.pop("gpu_ids", None)
    return write_yaml(tmp_path / f"{name}-cpu.yaml", config)


def launch(accelerate_config: str, stage: str, recipe: dict, tmp_path: Path, port: int):
    cfg = write_yaml(tmp_path / f"{stage}-{accelerate_config}.yaml", recipe)
    res = run_script([str(Path(__import__("sys").executable).parent / "accelerate"), "launch", "--config_file",
                      str(cpu_accelerate_config(accelerate_config, tmp_path)), "--main_process_port", str(port),
                      str(RECIPES / f"{stage}_sft.py"), "--config", str(cfg)], timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def _info(ckpt: Path) -> dict:
    return json.loads((ckpt / INFO_FILE).read_text())


def _reload_and_generate(ckpt: Path, world) -> None:
    assert missing_parts(ckpt) == [], ckpt
    model, processor = load_model_and_processor(ckpt, dtype="float32")
    record = read_records(world["stage1"])[0]
    generate_from_image(model, processor, record, world["root"] / record.image)


def test_stage1_zero3_then_stage2_ddp_from_its_checkpoint(tiny_model_dir, world, tmp_path):
    stage1 = tmp_path / "stage1"
    launch("zero3", "stage1", tiny_recipe_config(tiny_model_dir, world["stage1"], stage1, freeze_vision_tower=True),
           tmp_path, port=29611)
    ds_files = {p.name for p in (stage1 / "checkpoint-1" / "global_step1").iterdir()}
    # ZeRO-3 shards the parameters themselves: one model-state file per rank.
    assert {"zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"} <= ds_files
    assert _info(stage1)["distributed"] == {"world_size": 2, "distributed_type": "DEEPSPEED", "zero_stage": 3}
    for ckpt in (stage1 / "checkpoint-1", stage1):  # 16-bit weights gathered at every save
        _reload_and_generate(ckpt, world)

    stage2 = tmp_path / "stage2"
    # With the confidence tokens weighted: the loss this project computes itself must also run across ranks.
    launch("ddp", "stage2", tiny_recipe_config(stage1, world["stage2"], stage2, image_root=str(world["root"]),
                                               with_confidence=True, confidence_loss_weight=3.0),
           tmp_path, port=29612)
    info = _info(stage2)
    assert info["stage"] == "stage2" and info["data"]["with_confidence"] is True
    assert info["data"]["confidence_loss_weight"] == 3.0
    logs = [e for e in json.loads((stage2 / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(logs) == 2 and all(math.isfinite(e["loss"]) and e["loss"] > 0 for e in logs), logs
    # TRL's own loss logs its token accuracy; the weighted loss (built in EmoCaliberSFTTrainer) does not.
    assert not any("mean_token_accuracy" in e for e in logs), logs
    assert info["distributed"] == {"world_size": 2, "distributed_type": "MULTI_CPU"}
    assert [e["stage"] for e in info["lineage"]] == [None, "stage1"]
    assert info["lineage"][-1]["model"] == str(stage1.resolve())
    _reload_and_generate(stage2, world)


def test_stage1_zero2(tiny_model_dir, world, tmp_path):
    out = tmp_path / "stage1-zero2"
    launch("zero2", "stage1", tiny_recipe_config(tiny_model_dir, world["stage1"], out), tmp_path, port=29613)
    ds_files = {p.name for p in (out / "checkpoint-1" / "global_step1").iterdir()}
    # ZeRO-2 keeps full parameters (one model-state file) and shards optimizer states over the two ranks.
    assert "mp_rank_00_model_states.pt" in ds_files
    assert sum(name.endswith("optim_states.pt") for name in ds_files) == 2
    assert _info(out)["distributed"] == {"world_size": 2, "distributed_type": "DEEPSPEED", "zero_stage": 2}
    _reload_and_generate(out, world)
