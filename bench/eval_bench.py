#!/usr/bin/env python
"""Throughput of the evaluation runner against a one-call-per-item loop, same model, same items, one run.

The runner (emocaliber.evaluation.run_evaluation) is timed end to end: reading the records, loading images,
batched generation, writing predictions.jsonl and the full report (metrics.json, report.md, plots). The loop asks
the same loaded backend for one item at a time (what a naive script does) and writes nothing, so the comparison
favours the loop. Both decode with the same settings; with the random tiny model nearly every response runs to
--max-new-tokens, so both generate about the same number of tokens.

Responses run up to 160 tokens by default (`make demo` allows 128; a SynthEmo response is 74-90), in batches of 128
(`make demo` uses 32: on its stage-2 checkpoint 32, 64 and 128 gave the same greedy texts). The report (bootstrap
intervals and plots) costs about a second whatever the size, so very short responses (--max-new-tokens 32) or few
items show a smaller end-to-end ratio than the generation phase's.

Example: python bench/eval_bench.py --n-items 256 --batch-size 128 --max-new-tokens 160 --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint directory (default: build the tiny model in a temporary directory)")
    p.add_argument("--n-items", type=int, default=256, help="SynthEmo-8 test items (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="runner batch size (default %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=160, help="(default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.7, help="(default %(default)s, as the release)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default %(default)s: the tiny model gains nothing from more, and on a "
                        "shared machine extra threads wait on each other and distort both figures)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from emocaliber import synthemo
    from emocaliber.evaluation import EvalConfig, eval_request, load_eval_data, run_evaluation
    from emocaliber.generation import SamplingSettings, get_backend
    from emocaliber.modeling import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = args.model or str(build_tiny_model(tmp_path / "tiny", seed=0))
        synthemo.build_world(tmp_path / "data", synthemo.WorldConfig(
            n_train=0, n_test=args.n_items, n_ood=0, tasks=(synthemo.TASK_8,), seed=args.seed))
        data = tmp_path / "data" / "test.jsonl"
        backend = get_backend(model, "transformers", batch_size=args.batch_size, progress=False)
        config = EvalConfig(model=model, data=str(data), out=str(tmp_path / "run"), backend="transformers",
                            temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, chunk_size=max(128, args.batch_size), seed=args.seed,
                            n_bootstrap=1000, progress=False)
        items = load_eval_data(data)
        settings = SamplingSettings(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                    seed=args.seed)
        backend.generate([eval_request(items.records[0], items.image_root)], settings)  # warm-up, both paths

        start = time.perf_counter()
        result = run_evaluation(config, backend=backend)
        runner_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for record in items.records:
            backend.generate([eval_request(record, items.image_root)], settings)
        loop_seconds = time.perf_counter() - start

    n = len(items.records)
    runner, gen_only, loop = n / runner_seconds, result.items_per_second, n / loop_seconds
    print(f"model {'tiny (built here)' if not args.model else args.model}; {n} items, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, "
          f"{args.threads} torch thread(s), {os.cpu_count()} CPUs visible")
    print(f"runner end to end (generation + predictions.jsonl + report): {runner:8.2f} items/s  "
          f"({runner_seconds:.1f} s)")
    print(f"runner generation phase only:                                {gen_only:8.2f} items/s")
    print(f"one call per item, same backend:                             {loop:8.2f} items/s  ({loop_seconds:.1f} s)")
    print(f"speed-up end to end: {runner / loop:.1f}x   (generation phase: {gen_only / loop:.1f}x)")


if __name__ == "__main__":
    main()
