"""Fuzz the response parser and every reward function with generated responses; print what broke.

Responses come from ``tests/response_strategies.py`` (the generator the property tests use): perturbed
well-formed responses and random strings of tags, label words, numbers of every shape (NaN, 1e309, 400 nines,
percent, braced) and arbitrary unicode. Each response goes through ``parse_response`` in both modes and, in
batches, through every function of ``emocaliber.rewards.REWARDS``, as TRL calls them: plain strings and
conversational completions (``[{"role": "assistant", "content": ...}]``) mixed, candidate lists of the
registered tasks or random words, ground truths that are a candidate or not. Counted: exceptions, rewards that
are not finite, reward lists of the wrong length. The run passes when all three are 0.

    python bench/fuzz_rewards.py [--n 100000] [--seed 0] [--batch 64]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from response_strategies import random_candidates, random_response

from emocaliber.parsing import MODES, parse_response
from emocaliber.rewards import REWARDS


def batch(rng: random.Random, size: int) -> tuple[list, list, list]:
    """(completions, ground_truth, candidates) columns of one generated batch, as TRL passes them."""
    completions, truths, candidates = [], [], []
    for _ in range(size):
        text = random_response(rng)
        cands = random_candidates(rng)
        completions.append([{"role": "assistant", "content": text}] if rng.random() < 0.3 else text)
        truths.append(rng.choice(cands) if cands and rng.random() < 0.8 else rng.choice(["", "joy", "x" * 50]))
        candidates.append(cands)
    return completions, truths, candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="responses to generate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="completions per reward call (default %(default)s)")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    exceptions: Counter[str] = Counter()
    non_finite: Counter[str] = Counter()
    wrong_length: Counter[str] = Counter()
    first_error: dict[str, str] = {}
    n_done, n_rewards, valid = 0, 0, Counter()
    start = time.process_time()
    while n_done < args.n:
        completions, truths, candidates = batch(rng, min(args.batch, args.n - n_done))
        for completion, cands in zip(completions, candidates):
            text = completion if isinstance(completion, str) else completion[0]["content"]
            for mode in MODES:
                try:
                    valid[mode] += parse_response(text, cands, mode=mode).valid_format
                except Exception:  # noqa: BLE001 (counting every failure is the point)
                    exceptions[f"parse_response[{mode}]"] += 1
                    first_error.setdefault(f"parse_response[{mode}]", traceback.format_exc(limit=3))
        for name, func in REWARDS.items():
            try:
                values = func(completions=completions, ground_truth=truths, candidates=candidates)
            except Exception:  # noqa: BLE001
                exceptions[name] += len(completions)
                first_error.setdefault(name, traceback.format_exc(limit=3))
                continue
            if len(values) != len(completions):
                wrong_length[name] += 1
            non_finite[name] += sum(1 for v in values if not (isinstance(v, float | int) and math.isfinite(v)))
            n_rewards += len(values)
        n_done += len(completions)
    seconds = time.process_time() - start

    print(f"responses: {n_done} (seed {args.seed}, batches of {args.batch}); parser calls: {n_done * len(MODES)}; "
          f"reward values: {n_rewards} from {len(REWARDS)} functions ({', '.join(REWARDS)})")
    print("valid format: " + ", ".join(f"{mode} {valid[mode] / n_done:.1%}" for mode in MODES))
    print(f"exceptions: {sum(exceptions.values())}" + (f" {dict(exceptions)}" if exceptions else ""))
    print(f"non-finite rewards: {sum(non_finite.values())}"
          + (f" {dict(+non_finite)}" if sum(non_finite.values()) else ""))
    print(f"reward lists of the wrong length: {sum(wrong_length.values())}")
    print(f"CPU time: {seconds:.1f} s (process time, one core)")
    for name, text in first_error.items():
        print(f"--- first exception in {name}:\n{text}")
    return 0 if not (exceptions or sum(non_finite.values()) or wrong_length) else 1


if __name__ == "__main__":
    sys.exit(main())
