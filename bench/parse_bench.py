"""Throughput of the response parser and the rewards on a realistic mix of generated responses.

Prints responses parsed per CPU second (strict and release modes) and rewards computed per CPU second, on
one core (the timing uses process time, so other jobs on the machine do not distort it).
The mix: mostly well-formed ~600-character responses, plus the usual failures (missing part, percent or braced
or out-of-range confidence, verbose or repeated answers, newlines in tags, no tags at all).

    python bench/parse_bench.py [--n 20000] [--seed 0] [--repeat 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import random
import time

from emocaliber.parsing import parse_response
from emocaliber.prompts import format_target
from emocaliber.records import REASONING_PARTS
from emocaliber.rewards import REWARDS
from emocaliber.tasks import VECBENCH_TASKS, get_task

WORDS = ["the", "light", "falls", "softly", "across", "a", "crowded", "street", "while", "people", "gather",
         "near", "an", "old", "stone", "fountain", "and", "children", "play", "under", "tall", "trees", "with",
         "bright", "leaves", "dog", "runs", "along", "path", "clouds", "drift", "over", "distant", "hills",
         "scene", "feels", "calm", "open", "warm", "tense", "quiet", "busy"]


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def response(rng: random.Random, candidates: tuple[str, ...]) -> str:
    """One generated response; about 70% are valid in strict mode."""
    reasoning = {p: sentence(rng, rng.randint(14, 22)) for p in REASONING_PARTS}
    label = rng.choice(candidates)
    answer = rng.choice([label, label, label.capitalize(), f"{label.capitalize()}.", f"The answer is {label}"])
    text = format_target(reasoning, answer, round(rng.uniform(0.05, 0.95), 2))
    kind = rng.random()
    if kind < 0.70:
        return text
    if kind < 0.76:
        return text.replace("<confidence>0.", "<confidence>{0.").replace("</confidence>", "}</confidence>")
    if kind < 0.80:
        return text.split("<confidence>")[0] + f"<confidence>{rng.randint(5, 99)}%</confidence>"
    if kind < 0.85:
        return text.replace(f"<{rng.choice(REASONING_PARTS)}>", "<")
    if kind < 0.89:
        return text.split("<confidence>")[0] + rng.choice(["<confidence>high</confidence>", "<confidence>1.5",
                                                            "<confidence>-0.2</confidence>"])
    if kind < 0.93:
        return text + f"\n<answer>{rng.choice(candidates)} or {rng.choice(candidates)}</answer>"
    if kind < 0.97:
        return text.replace("<answer>", "<answer>\n")
    return " ".join(reasoning.values()) + f" I think it is {label}, confidence about {rng.randint(40, 95)}%."


def build_mix(n: int, seed: int) -> list[tuple[str, tuple[str, ...], str]]:
    rng = random.Random(seed)
    tasks = [get_task(t) for t in VECBENCH_TASKS]
    out = []
    for _ in range(n):
        task = rng.choice(tasks)
        out.append((response(rng, task.labels), task.labels, rng.choice(task.labels)))
    return out


def rate(func, count: int, repeat: int) -> float:
    best = min(_timed(func) for _ in range(repeat))
    return count / best


def _timed(func) -> float:
    """CPU seconds of this process: on a shared machine wall time measures the neighbours too."""
    start = time.process_time()
    func()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="responses in the mix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is reported)")
    parser.add_argument("--batch", type=int, default=64, help="completions per reward call, as in a GRPO step")
    args = parser.parse_args()

    mix = build_mix(args.n, args.seed)
    mean_len = sum(len(r) for r, _, _ in mix) / len(mix)
    valid = sum(parse_response(r, c).valid_format for r, c, _ in mix) / len(mix)
    print(f"{len(mix)} responses, mean {mean_len:.0f} characters, {valid:.0%} valid in strict mode")
    for mode in ("strict", "release"):
        r = rate(lambda m=mode: [parse_response(t, c, m) for t, c, _ in mix], len(mix), args.repeat)
        print(f"parse_response mode={mode:<10}  {r:>10,.0f} responses/s")

    batches = [mix[k:k + args.batch] for k in range(0, len(mix), args.batch)]
    as_chat = [[[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t, _, _ in b] for b in batches]
    for name in ("release", "spherical", "calibrated_log", "brier", "format", "accuracy"):
        func = REWARDS[name]
        r = rate(lambda f=func: [f(completions=[t for t, _, _ in b], ground_truth=[g for _, _, g in b],
                                   candidates=[list(c) for _, c, _ in b]) for b in batches], len(mix), args.repeat)
        print(f"reward {name:<15} strings   {r:>10,.0f} completions/s")
    func = REWARDS["spherical"]
    r = rate(lambda: [func(completions=chat, ground_truth=[g for _, _, g in b], candidates=[list(c) for _, c, _ in b])
                      for b, chat in zip(batches, as_chat)], len(mix), args.repeat)
    print(f"reward {'spherical':<15} messages  {r:>10,.0f} completions/s")


if __name__ == "__main__":
    main()
