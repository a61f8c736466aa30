#!/usr/bin/env python
"""Batched generation vs one generate call per item: the same model, prompts and greedy settings, in one run.

Prints items/s for both and their ratio (the goal with the tiny model on CPU at batch 32 is >= 8x). Without
--model a tiny random Qwen2.5-VL is built in a temporary directory (about 10 s). The prompts are the
evaluation prompts of EmoSet-8 and FI-2 records over images of a few sizes, so batches mix prompt lengths.
On a shared 2-core machine pass --threads 1: two torch threads competing with other processes run ~10x slower.

Example: python bench/generation_bench.py --items 64 --batch-size 32 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_requests(root: Path, n: int):
    from PIL import Image

    from emocaliber.generation import record_request
    from emocaliber.records import Record
    from emocaliber.tasks import MIKELS_8

    requests = []
    for i in range(n):
        rel = f"img/{i}.png"
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (56 + 28 * (i % 3), 56 + 28 * (i % 2)), ((37 * i) % 256, (91 * i) % 256, 128)).save(
            root / rel)
        emotion = i % 2 == 0
        record = Record(id=f"bench/{i}", task="EmoSet-8" if emotion else "FI-2", image=rel,
                        candidates=list(MIKELS_8) if emotion else ["positive", "negative"],
                        ground_truth="awe" if emotion else "positive", split="test", source="bench")
        requests.append(record_request(record, image_root=root))
    return requests


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: build the tiny model)")
    p.add_argument("--items", type=int, default=64, help="prompts generated in each mode (default 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)

    import torch

    from emocaliber.generation import SamplingSettings, TransformersBackend
    from emocaliber.modeling import build_tiny_model, load_model_and_processor

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "tiny", seed=0)
        loaded = load_model_and_processor(model_dir, padding_side="left")
        requests = build_requests(Path(tmp) / "data", args.items)
        settings = SamplingSettings(max_new_tokens=args.max_new_tokens)
        batched = TransformersBackend(loaded, batch_size=args.batch_size, progress=False)
        single = TransformersBackend(loaded, batch_size=1, progress=False)
        batched.generate(requests[:2], settings)  # warm-up: first-call allocations are not what we measure

        start = time.perf_counter()
        out_batched = batched.generate(requests, settings)
        t_batched = time.perf_counter() - start
        start = time.perf_counter()
        out_single = [single.generate([r], settings)[0] for r in requests]
        t_single = time.perf_counter() - start

    rate_b, rate_s = args.items / t_batched, args.items / t_single
    print(f"model: {args.model or 'tiny Qwen2.5-VL (random)'}; items {args.items}; max_new_tokens "
          f"{args.max_new_tokens}; torch threads {torch.get_num_threads()}")
    print(f"batched (batch {args.batch_size}): {rate_b:8.2f} items/s  ({t_batched:.2f} s)")
    print(f"one call per item:      {rate_s:8.2f} items/s  ({t_single:.2f} s)")
    print(f"speed-up: {rate_b / rate_s:.1f}x; same greedy outputs: {out_batched == out_single}")


if __name__ == "__main__":
    main()
