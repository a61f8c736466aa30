#!/usr/bin/env python
"""Does stage 3 learn? Mean reward, parse rate, accuracy, mean confidence and ECE of the GRPO rollouts over
training, for the tiny Qwen2.5-VL on SynthEmo, with the project's default reward.

Pipeline (each part is cached under --out, so a rerun with other GRPO settings skips the rest):
  1. SynthEmo-8 (--n-train images) and the tiny model;
  2. a stage-2-like model: SFT on the teacher's reasoning + the drawn label + a *random* confidence target
     (0.30-0.95 in steps of 0.05, seeded): a constant target (0.90) leaves the
     confidence tokens without entropy, so GRPO never explores another value;
  3. GRPO (emocaliber.train.grpo.run_grpo) for --steps steps, then the table of emocaliber.train.grpo.reward_curve
     over ranges of --bucket steps. The running-ECE window is set to one range, so "ece" is each range's own.

  python bench/grpo_reward_curve.py --out runs/bench/grpo_curve            # ~15 min on 2 busy CPU cores
  python bench/grpo_reward_curve.py --out runs/bench/grpo_curve --lr 1e-4 --beta 0.04 --steps 300

Rollouts are sampled at temperature 1.0, so their accuracy and parse rate are lower than greedy decoding's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from emocaliber.rewards import DEFAULT_REWARD, REWARDS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench/grpo_curve"), help="work directory (cached parts)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, model, targets and training")
    p.add_argument("--n-train", type=int, default=400, help="SynthEmo-8 training images")
    p.add_argument("--sft-epochs", type=float, default=10, help="stage-2 SFT epochs")
    p.add_argument("--sft-lr", type=float, default=2e-3, help="stage-2 SFT learning rate")
    p.add_argument("--steps", type=int, default=300, help="GRPO steps")
    p.add_argument("--bucket", type=int, default=50, help="steps per table row")
    p.add_argument("--prompts-per-step", type=int, default=2, help="prompts per GRPO step (x 8 generations)")
    p.add_argument("--lr", type=float, default=3e-4, help="GRPO learning rate")
    p.add_argument("--beta", type=float, default=0.01, help="KL coefficient to the stage-2 model")
    p.add_argument("--reward", default=DEFAULT_REWARD, choices=sorted(REWARDS), help="reward (default %(default)s)")
    p.add_argument("--max-completion-length", type=int, default=160, help="generation budget per rollout")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest for the tiny model when other processes share the CPU")
    return p.parse_args(argv)


def stage2_corpus(stage1: Path, out: Path, seed: int) -> Path:
    """Stage-1 records with a random confidence target each (the stage-2 shape)."""
    from emocaliber.records import read_records, write_jsonl

    rng = random.Random(seed)
    grid = [k / 20 for k in range(6, 20)]
    write_jsonl(out, [dict(r.to_dict(), confidence=rng.choice(grid)) for r in read_records(stage1)])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from trl import GRPOConfig, SFTConfig

    from emocaliber import synthemo
    from emocaliber.modeling import build_tiny_model
    from emocaliber.train.configs import DataArgs, ModelArgs
    from emocaliber.train.grpo import GRPOScriptArgs, curve_markdown, reward_curve, run_grpo
    from emocaliber.train.sft import run_sft

    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    out = args.out
    world, tiny, stage2, stage3 = out / "synthemo", out / "tiny", out / "stage2", out / "stage3"
    started = time.time()
    if not (world / "stage3.jsonl").is_file():
        synthemo.build_world(world, synthemo.WorldConfig(n_train=args.n_train, n_test=0, tasks=(synthemo.TASK_8,),
                                                         seed=args.seed))
    if not (tiny / "config.json").is_file():
        build_tiny_model(tiny, seed=args.seed)
    if not (stage2 / "model.safetensors").is_file():
        corpus = stage2_corpus(world / "stage1.jsonl", world / "stage2.jsonl", args.seed)
        run_sft(ModelArgs(str(tiny), dtype="float32"), DataArgs(str(corpus), with_confidence=True),
                SFTConfig(output_dir=str(stage2), use_cpu=True, bf16=False, num_train_epochs=args.sft_epochs,
                          per_device_train_batch_size=8, learning_rate=args.sft_lr, lr_scheduler_type="cosine",
                          warmup_steps=0.05, max_length=None, gradient_checkpointing=False, save_strategy="no",
                          logging_steps=25, report_to="none", disable_tqdm=True, seed=args.seed),
                stage="stage2")
    sft_done = time.time()

    shutil.rmtree(stage3, ignore_errors=True)
    per_step = 8 * args.prompts_per_step
    run_grpo(ModelArgs(str(stage2), dtype="float32"), DataArgs(str(world / "stage3.jsonl"), with_confidence=True),
             GRPOScriptArgs(reward_funcs=[args.reward], rollout_window=args.bucket * per_step),
             GRPOConfig(output_dir=str(stage3), use_cpu=True, bf16=False, use_vllm=False, max_steps=args.steps,
                        num_generations=8, per_device_train_batch_size=per_step, temperature=1.0,
                        max_completion_length=args.max_completion_length, learning_rate=args.lr,
                        lr_scheduler_type="constant", beta=args.beta, scale_rewards="none", loss_type="bnpo",
                        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none",
                        disable_tqdm=True, seed=args.seed))
    history = json.loads((stage3 / "trainer_state.json").read_text())["log_history"]
    table = curve_markdown(reward_curve(history, args.bucket))
    (out / "reward_curve.md").write_text(table + "\n", encoding="utf-8")
    print(f"reward={args.reward} lr={args.lr} beta={args.beta} steps={args.steps} x {per_step} rollouts; "
          f"SFT {sft_done - started:.0f} s, GRPO {time.time() - sft_done:.0f} s")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
