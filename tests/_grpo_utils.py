"""Shared by test_grpo.py and test_grpo_distributed.py: a small SynthEmo world and the stage-3 recipe's argv."""

from __future__ import annotations

import json
from pathlib import Path

from emocaliber import synthemo

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "stage3_grpo.py"
TINY_CONFIG = ROOT / "recipes" / "tiny" / "stage3.yaml"
QWEN_CONFIG = ROOT / "recipes" / "qwen2.5-vl-7b" / "stage3.yaml"


def small_world(root: Path, n_train: int = 8) -> Path:
    """SynthEmo-8 prompts only (stage3.jsonl under ``root``)."""
    synthemo.build_world(root, synthemo.WorldConfig(n_train=n_train, n_test=0, tasks=(synthemo.TASK_8,), seed=1))
    return root / "stage3.jsonl"


def recipe_args(model_dir: Path, train_file: Path, out: Path, *, steps: int, **overrides) -> list[str]:
    """Argv for recipes/stage3_grpo.py: the tiny config, shortened to a few steps of short completions."""
    args = {"model_name_or_path": model_dir, "train_file": train_file, "output_dir": out, "max_steps": steps,
            "per_device_train_batch_size": 8, "num_generations": 8, "max_completion_length": 16,
            "save_steps": steps, "disable_tqdm": "true", **overrides}
    argv = ["--config", str(TINY_CONFIG)]
    for key, value in args.items():
        argv += [f"--{key}", str(value)]
    return argv


def log_history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def step_logs(out: Path) -> list[dict]:
    """The per-step training logs (those that carry a reward)."""
    return [h for h in log_history(out) if "reward" in h]
