#!/usr/bin/env python
"""SFT throughput and padding: training tokens per second and the padding fraction of each batch, for the default
random batches and for length-grouped batches (train_sampling_strategy: group_by_length), in one run.

Padding is wasted compute: a batch is as long as its longest row (prompt with image tokens + target). Rows of
different tasks (2 vs 8 candidates, long vs short reasoning) and images of different sizes pad each other.
transformers' LengthGroupedSampler sorts rows inside megabatches of min(50, N // (4 * batch)) batches, so grouping
only has an effect when the data holds at least 8 batches.

  python bench/sft_bench.py                                   # tiny model + a fresh SynthEmo world, CPU
  python bench/sft_bench.py --model runs/tiny/base --train-file data/synthemo/stage1.jsonl --steps 20
  python bench/sft_bench.py --model Qwen/Qwen2.5-VL-7B-Instruct --train-file ... --gpu --bf16 \\
      --min-pixels 200704 --max-pixels 451584 --batch-size 8

Columns: tokens/s = non-padding tokens trained per second of wall time from the end of step 1 to the end of
training (includes collation and image processing); pad_mean / pad_max = padding fraction over the batches trained;
the per-batch list follows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

STRATEGIES = ("random", "group_by_length")


class PaddingRecorder:
    """Wraps the trainer's collator to record each batch's real and padded token counts as training consumes it."""

    def __init__(self, collator):
        self.collator = collator
        self.real: list[int] = []
        self.total: list[int] = []

    def __call__(self, examples):
        batch = self.collator(examples)
        mask = batch["attention_mask"]
        self.real.append(int(mask.sum()))
        self.total.append(int(mask.numel()))
        return batch

    @property
    def pad_fractions(self) -> list[float]:
        return [1 - r / t for r, t in zip(self.real, self.total, strict=True)]


def run(strategy: str, args: argparse.Namespace, model: str, train_file: str, image_root: str | None,
        out: Path) -> tuple[float, list[float]]:
    from trl import SFTConfig

    from emocaliber.train.configs import DataArgs, ModelArgs
    from emocaliber.train.sft import build_trainer

    config = SFTConfig(
        output_dir=str(out / strategy), use_cpu=not args.gpu, bf16=args.bf16, report_to="none", max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, save_strategy="no", logging_steps=args.steps,
        gradient_checkpointing=args.gradient_checkpointing, max_length=None, seed=args.seed, disable_tqdm=True,
        train_sampling_strategy=strategy, learning_rate=1e-5)
    trainer = build_trainer(
        ModelArgs(model_name_or_path=model, dtype=args.dtype, min_pixels=args.min_pixels, max_pixels=args.max_pixels),
        DataArgs(train_file=train_file, image_root=image_root, with_confidence=args.with_confidence), config,
        stage="bench")
    recorder = PaddingRecorder(trainer.data_collator)
    trainer.data_collator = recorder
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    # The first step pays one-time costs (allocations, lazy init); time the steps after it.
    return sum(recorder.real[1:args.steps]) / (clock.end - clock.after_first), recorder.pad_fractions[:args.steps]


class StepClock(TrainerCallback):
    """Wall time after the first optimizer step and at the end of training."""

    after_first = end = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.after_first = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model dir or hub id (default: build the tiny model in a temp dir)")
    parser.add_argument("--train-file", help="records file (default: a fresh SynthEmo stage-1 file)")
    parser.add_argument("--image-root", help="image root (default: the train file's directory)")
    parser.add_argument("--n-train", type=int, default=48, help="SynthEmo images when no --train-file (default 48)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per strategy (default 12)")
    parser.add_argument("--batch-size", type=int, default=8, help="per-device batch size (default 8)")
    parser.add_argument("--with-confidence", action="store_true", help="stage-2 prompts and targets")
    parser.add_argument("--min-pixels", type=int, default=None)
    parser.add_argument("--max-pixels", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (default: CPU)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        tmp_path = Path(tmp)
        model = args.model
        if model is None:
            from emocaliber.modeling import build_tiny_model

            model = str(build_tiny_model(tmp_path / "tiny", seed=args.seed))
        train_file = args.train_file
        if train_file is None:
            from emocaliber import synthemo

            synthemo.build_world(tmp_path / "synthemo", synthemo.WorldConfig(n_train=args.n_train, n_test=1,
                                                                            seed=args.seed))
            train_file = str(tmp_path / "synthemo" / "stage1.jsonl")
        results = {s: run(s, args, model, train_file, args.image_root, tmp_path) for s in STRATEGIES}

    print(f"model={model} train_file={train_file} steps={args.steps} batch={args.batch_size} "
          f"device={'gpu' if args.gpu else 'cpu'}")
    print(f"{'strategy':<16} {'tokens/s':>10} {'pad_mean':>9} {'pad_max':>8}")
    for strategy, (tps, pads) in results.items():
        print(f"{strategy:<16} {tps:>10.1f} {sum(pads) / len(pads):>9.3f} {max(pads):>8.3f}")
    for strategy, (_, pads) in results.items():
        print(f"per-batch padding ({strategy}): " + " ".join(f"{p:.3f}" for p in pads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
