#!/usr/bin/env python
"""What greedy decoding states as the confidence, against the confidence the model's distribution holds.

A confidence like ``0.62`` is written one digit per token (the tiny tokenizer, like Qwen's, splits numbers into
digits), so greedy decoding picks the most likely *tenths digit*, then the most likely hundredths digit after it.
When the model spreads a low confidence over 0.5x and 0.6x and puts a smaller but undivided mass on 0.9x, greedy
states 0.9x although most of the mass, and the mean, are far lower. This prints, per task and image class (SynthEmo's
``meta.mix.primary``), over up to ``--per-class`` greedy predictions of one evaluation: the mean stated
confidence, the mean of the model's distribution over the two-digit value after the same reasoning and answer, and
the mean tenths-digit distribution. Then, per task group over the same predictions, ECE and AUROC of the stated
confidence against those of the mean and of a confidence drawn from the distribution at ``--sample-temperature``
(the rollouts' temperature: what GRPO trains), averaged over ``--draws`` seeded draws (with ``--per-class 1000``
on the demo: every test prediction). Nothing else in the project reads the confidence's distribution; this is a
diagnostic for docs/demo.md.

Example: python bench/confidence_modes.py --model runs/demo/stage3 --eval runs/demo/eval/stage3 \\
             --image-root runs/demo/data --classes awe,fear,excitement
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from emocaliber.evaluation import PREDICTIONS_FILE
from emocaliber.generation import record_request, render_prompt
from emocaliber.metrics import auroc, ece
from emocaliber.modeling import load_model_and_processor
from emocaliber.parsing import parse_response
from emocaliber.records import Record
from emocaliber.tasks import get_task

OPEN = "<confidence>0."


def value_distribution(model, processor, prefix: str, images: list) -> tuple[np.ndarray, np.ndarray]:
    """The tenths-digit distribution after ``prefix`` (which ends in ``<confidence>0.``) and, per tenths digit d,
    the next token's distribution over the ten digits and the closing tag (``0.6</confidence>`` is 0.6).

    One batch of ten sequences, ``prefix + d`` for each digit d: the second-to-last position gives P(d), the
    last P(next | d). Mass on any other token is left out and the rest renormalised.
    """
    import torch

    tok = processor.tokenizer
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    close = tok.convert_tokens_to_ids("</")
    texts = [prefix + str(d) for d in range(10)]
    with torch.inference_mode():
        inputs = processor(text=texts, images=images * 10, padding=True, return_tensors="pt")
        probs = torch.softmax(model(**inputs).logits[:, -2:].float(), dim=-1)
    tenths = probs[0, 0, digits].numpy()
    nxt = probs[:, 1, [*digits, close]].numpy()
    return tenths / tenths.sum(), nxt / nxt.sum(axis=1, keepdims=True)


#: The value of each (tenths digit, next token) pair; the next token is a hundredths digit or the closing tag.
VALUES = np.array([[d / 10 + e / 100 for e in range(10)] + [d / 10] for d in range(10)])


def mean_value(tenths: np.ndarray, nxt: np.ndarray) -> float:
    return float(tenths @ (nxt * VALUES).sum(axis=1))


def sample_values(tenths: np.ndarray, nxt: np.ndarray, temperature: float, rng: np.random.Generator,
                  n: int) -> np.ndarray:
    """``n`` confidences drawn digit by digit at ``temperature``, as sampling restricted to these tokens would."""
    def sharpen(q: np.ndarray) -> np.ndarray:
        q = np.power(np.clip(q, 1e-12, None), 1 / temperature)
        return q / q.sum(axis=-1, keepdims=True)

    t, x = sharpen(tenths), sharpen(nxt)
    d = rng.choice(10, size=n, p=t)
    e = np.array([rng.choice(11, p=x[i]) for i in d])
    return VALUES[d, e]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="the checkpoint that wrote the predictions")
    p.add_argument("--eval", required=True, type=Path, help="its eval/run_vecbench.py directory (greedy)")
    p.add_argument("--image-root", required=True, type=Path)
    p.add_argument("--classes", default=None, help="comma-separated primary emotions (default: all)")
    p.add_argument("--per-class", type=int, default=30, help="predictions per task and class (default 30)")
    p.add_argument("--sample-temperature", type=float, default=0.7,
                   help="also score the confidence sampled at this temperature after the greedy answer "
                        "(default %(default)s, the demo's rollout temperature)")
    p.add_argument("--draws", type=int, default=20, help="samples per prediction (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    classes = set(args.classes.split(",")) if args.classes else None
    model, processor = load_model_and_processor(args.model, padding_side="left")
    model.eval()
    taken, skipped = Counter(), Counter()
    cells: dict[tuple[str, str], list[tuple[float, float, np.ndarray]]] = defaultdict(list)
    groups: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
    draws: dict[str, list[np.ndarray]] = defaultdict(list)
    rng = np.random.default_rng(args.seed)
    with open(args.eval / PREDICTIONS_FILE, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            record = Record.from_dict(row["record"])
            mix = record.meta.get("mix") or {}
            key = (record.task, mix.get("primary"))
            if key[1] is None or (classes and key[1] not in classes) or taken[key] >= args.per_class:
                continue
            response = row.get("response") or ""
            at = response.rfind(OPEN)
            if at < 0:
                skipped["no '<confidence>0.' in the response"] += 1
                continue
            parsed = parse_response(response, record.candidates)
            if parsed.label is None or parsed.confidence is None:
                skipped["no label or confidence parsed"] += 1
                continue
            stated = parsed.confidence
            request = record_request(record, image_root=args.image_root)
            prefix = render_prompt(processor, request) + response[: at + len(OPEN)]
            tenths, nxt = value_distribution(model, processor, prefix, request.images)
            mean = mean_value(tenths, nxt)
            cells[key].append((stated, mean, tenths))
            groups[get_task(record.task).group].append((stated, mean, parsed.label == record.ground_truth))
            draws[get_task(record.task).group].append(
                sample_values(tenths, nxt, args.sample_temperature, rng, args.draws))
            taken[key] += 1
    print(f"{args.model} on {args.eval}: stated (greedy) / mean of the model's distribution / tenths digit")
    for (task, primary), rows in sorted(cells.items()):
        stated = np.mean([r[0] for r in rows])
        mean = np.mean([r[1] for r in rows])
        tenths = np.mean([r[2] for r in rows], axis=0)
        spread = " ".join(f"{d}:{tenths[d]:.2f}" for d in range(10) if tenths[d] >= 0.03)
        print(f"  {task:15s} {primary:12s} n={len(rows):3d}  stated {stated:.2f}  mean {mean:.2f}  {spread}")
    print(f"per group (x100): accuracy, then ECE / AUROC of the stated confidence, of the mean, and of a confidence"
          f" sampled at temperature {args.sample_temperature} (mean +- sd over {args.draws} draws)")
    for group, items in sorted(groups.items()):
        stated_c, mean_c, right = (np.array(v) for v in zip(*items))
        sampled = np.array(draws[group])  # (predictions, draws)
        e = [100 * ece(sampled[:, j], right) for j in range(args.draws)]
        a = [100 * auroc(sampled[:, j], right) for j in range(args.draws)]
        print(f"  {group:10s} n={len(right):4d}  accuracy {100 * right.mean():.1f}"
              f"  stated {100 * ece(stated_c, right):.1f} / {100 * auroc(stated_c, right):.1f}"
              f"  mean {100 * ece(mean_c, right):.1f} / {100 * auroc(mean_c, right):.1f}"
              f"  sampled {np.mean(e):.1f}+-{np.std(e):.1f} / {np.mean(a):.1f}+-{np.std(a):.1f}")
    if skipped:
        print("skipped:", dict(skipped))


if __name__ == "__main__":
    main()
