"""Stage 3 as users launch it: ``accelerate launch --config_file recipes/accelerate_configs/... recipes/stage3_grpo.py``
with two CPU processes (gloo), two GRPO steps of the tiny model each. The shipped GPU configs are adapted only
where a CPU run must differ (two processes, no mixed precision, DeepSpeed's CPU accelerator).

All three run with a KL term (beta > 0), so the reference model is built and used under DDP, ZeRO-2 and ZeRO-3
(where it is built inside ``deepspeed.zero.Init``): at step 1 the policy is the starting model, so a reference
loaded correctly gives a KL of zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _grpo_utils import RECIPE, ROOT, recipe_args, small_world, step_logs

from emocaliber.rewards import DEFAULT_REWARD
from emocaliber.train.checkpoint import INFO_FILE, missing_parts
from emocaliber.train.grpo import reward_wiring

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return small_world(tmp_path_factory.mktemp("synthemo-grpo-dist"))


def cpu_accelerate_config(name: str, tmp_path: Path) -> Path:
    """recipes/accelerate_configs/<name>.yaml for two CPU processes (DeepSpeed: its CPU accelerator, use_cpu;
    DDP: use_cpu stays false here, else accelerate starts one process; the recipe's use_cpu makes them CPU ranks)."""
    config = yaml.safe_load((ROOT / "recipes" / "accelerate_configs" / f"{name}.yaml").read_text())
    config.update(num_processes=2, num_machines=1, machine_rank=0, mixed_precision="no",
                  use_cpu=config["distributed_type"] == "DEEPSPEED")
    config.pop("gpu_ids", None)
    path = tmp_path / f"{name}-cpu.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def launch(name: str, argv: list[str], tmp_path: Path, port: int):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(cpu_accelerate_config(name, tmp_path)), "--main_process_port", str(port), str(RECIPE), *argv]
    return subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(("name", "port"), [("ddp", 29631), ("zero2", 29632), ("zero3", 29633)])
def test_two_process_grpo_logs_every_reward_component(name, port, tiny_model_dir, train_file, tmp_path):
    out = tmp_path / name
    res = launch(name, recipe_args(tiny_model_dir, train_file, out, steps=2, beta=0.04), tmp_path, port)
    assert res.returncode == 0, res.stderr[-4000:]

    logs = step_logs(out)
    assert [h["step"] for h in logs] == [1, 2]
    names = [f.__name__ for f in reward_wiring([DEFAULT_REWARD])[0]]
    keys = [f"rewards/{n}/mean" for n in names] + ["reward", "frac_reward_zero_std", "rollout/parse_rate",
                                                    "rollout/accuracy", "kl"]
    for key in keys:
        assert all(key in h for h in logs), key
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    info = json.loads((out / INFO_FILE).read_text())
    assert info["distributed"]["world_size"] == 2
    assert info["distributed"].get("zero_stage") == {"ddp": None, "zero2": 2, "zero3": 3}[name]
    assert info["rewards"]["trl_reward_funcs"] == names
    assert missing_parts(out) == []


def test_two_process_zero3_validation_agrees_and_keeps_the_start(tiny_model_dir, tmp_path):
    """Validation under ZeRO-3 on two processes: each answers half the prompts inside the parameter gather, the
    table covers every prompt, both processes agree on the best step (else the trainer's save barrier hangs), and
    the random model, which never parses, leaves the starting weights in output_dir."""
    from emocaliber.records import read_records, write_records
    from emocaliber.train.checkpoint import file_sha256
    from emocaliber.train.validation import VAL_LOG, holdout_by_image

    root = tmp_path / "world"
    train, val = holdout_by_image(read_records(small_world(root, n_train=12)), 5, seed=0)
    write_records(root / "train.jsonl", train)
    write_records(root / "val.jsonl", val)
    out = tmp_path / "zero3-val"
    argv = recipe_args(tiny_model_dir, root / "train.jsonl", out, steps=2, val_file=root / "val.jsonl",
                       eval_steps=1, save_steps=1, save_total_limit=1)
    res = launch("zero3", argv, tmp_path, 29634)
    assert res.returncode == 0, res.stderr[-4000:]
    history = [json.loads(line) for line in (out / VAL_LOG).read_text().splitlines()]
    assert [e["step"] for e in history] == [0, 1, 2] and all(e["n"] == len(val) == 5 for e in history)
    info = json.loads((out / INFO_FILE).read_text())
    assert info["selection"]["selected_step"] == 0
    assert file_sha256(out / "model.safetensors") == file_sha256(tiny_model_dir / "model.safetensors")
    assert [h["step"] for h in step_logs(out)] == [1, 2]
