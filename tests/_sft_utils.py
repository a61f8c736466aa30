"""Shared helpers of tests/test_sft.py and tests/test_sft_distributed.py (not collected: no test_ prefix)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from PIL import Image

from emocaliber import synthemo
from emocaliber.prompts import build_messages
from emocaliber.records import Record, read_records, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def build_sft_world(root: Path, n_train: int = 8, seed: int = 0) -> dict[str, Path]:
    """A small SynthEmo world plus a stage-2 file (stage-1 records + a confidence target from the oracle)."""
    synthemo.build_world(root, synthemo.WorldConfig(n_train=n_train, n_test=1, seed=seed))
    stage2 = [Record.from_dict({**r.to_dict(), "confidence": min(0.95, max(0.05, round(r.meta["oracle_confidence"],
                                                                                        2)))})
              for r in read_records(root / "stage1.jsonl")]
    write_jsonl(root / "stage2.jsonl", stage2)
    return {"root": root, "stage1": root / "stage1.jsonl", "stage2": root / "stage2.jsonl"}


def sft_config(output_dir: Path, **overrides):
    """A CPU SFTConfig for a few quick steps; tests override what they exercise."""
    from trl import SFTConfig

    kwargs = {"output_dir": str(output_dir), "use_cpu": True, "bf16": False, "report_to": "none", "max_steps": 2,
              "per_device_train_batch_size": 2, "logging_steps": 1, "save_strategy": "no",
              "gradient_checkpointing": False, "learning_rate": 1e-3, "max_length": None, "disable_tqdm": True,
              "seed": 0, "dataloader_num_workers": 0}
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def write_yaml(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def tiny_recipe_config(model: Path, train_file: Path, output_dir: Path, **overrides) -> dict:
    """A recipe YAML for the tiny model on CPU, like recipes/tiny/*.yaml but a few steps long."""
    config = {"model_name_or_path": str(model), "dtype": "float32", "train_file": str(train_file),
              "output_dir": str(output_dir), "use_cpu": True, "bf16": False, "report_to": "none", "max_steps": 2,
              "per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 1, "learning_rate": 1.0e-3,
              "max_length": None, "gradient_checkpointing": True,
              "gradient_checkpointing_kwargs": {"use_reentrant": False}, "seed": 0, "disable_tqdm": True}
    config.update(overrides)
    return config


def run_script(args: list[str], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
               PYTHONPATH=str(ROOT))
    return subprocess.run(args, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def generate_from_image(model, processor, record: Record, image_path: Path, max_new_tokens: int = 8) -> str:
    """Greedy generation for one record's prompt and image; returns the new text."""
    processor.tokenizer.padding_side = "left"
    with Image.open(image_path) as im:
        image = im.convert("RGB")
    messages = build_messages(record, with_confidence=False, image=image)
    inputs = processor.apply_chat_template([messages], add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert new.numel() > 0
    return processor.tokenizer.decode(new)


def trainer_losses(output_dir: Path) -> dict[int, float]:
    """Step -> logged training loss from the trainer_state.json a run saved."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def run_recipe_main(script: str, argv: list[str]) -> None:
    """Call a recipes/<script>.py's main(argv) in this process: the script's own wiring, without the cost of a
    fresh interpreter importing torch and TRL."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{script}", RECIPES / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)
