#!/usr/bin/env python
"""Seconds per validation pass of stage 3 (emocaliber.train.validation): greedy answers to N held-out SynthEmo
prompts with transformers generation, parsed and scored by the evaluation's rules, as the validation callback does
at each validated step (one process).

Without --model a tiny random Qwen2.5-VL is built: it never emits an end token, so every answer runs to
--max-new-tokens, the worst case for that budget. Pass a stage-2 checkpoint to time answers of their real length.
On a shared 2-core machine keep --threads 1.

Example: python bench/validation_cost.py --n 128 --max-new-tokens 160 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: a tiny random model)")
    parser.add_argument("--n", type=int, default=128, help="validation prompts")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="answer budget (tiny recipe: 160)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="passes timed (the first includes warm-up)")
    args = parser.parse_args(argv)

    import torch

    from emocaliber import synthemo
    from emocaliber.evaluation import make_chunk_processor
    from emocaliber.generation import SamplingSettings, TransformersBackend
    from emocaliber.modeling import build_tiny_model
    from emocaliber.records import read_records
    from emocaliber.train.validation import spread, validation_metrics

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "world"
        n_images = (args.n + 1) // 2  # SynthEmo-8 and -2 ask each image twice
        synthemo.build_world(root, synthemo.WorldConfig(n_train=n_images, n_test=0, seed=0))
        records = spread(read_records(root / "stage3.jsonl"), args.n)
        model = args.model or build_tiny_model(Path(tmp) / "tiny", seed=0)
        backend = TransformersBackend(Path(model), batch_size=args.batch_size, dtype="float32", progress=False)
        settings = SamplingSettings(max_new_tokens=args.max_new_tokens)
        cpu = _cpu_name()
        print(f"{len(records)} prompts, max {args.max_new_tokens} new tokens, batch {args.batch_size}, "
              f"{args.threads} thread(s), {cpu}, model {'tiny random' if args.model is None else args.model}")
        for i in range(args.repeats):
            start = time.perf_counter()
            rows = make_chunk_processor(backend, root, settings)(records, 0)
            metrics = validation_metrics(rows)
            seconds = time.perf_counter() - start
            tokens = sum(len(backend.processor.tokenizer(r["response"] or "")["input_ids"]) for r in rows)
            print(f"pass {i + 1}: {seconds:.1f} s ({seconds / len(records):.3f} s per prompt, "
                  f"{tokens / len(records):.0f} answer tokens per prompt, re-encoded), overall parse rate "
                  f"{metrics['overall']['parse_rate']:.2f}")


if __name__ == "__main__":
    main()
