"""Pseudo-labels for unlabelled images with FlexMatch's class-wise thresholds (as Rank-O-ToM uses them).

Rank-O-ToM blends labelled images with unlabelled ones whose label the model itself supplies. A single global
threshold (FixMatch's tau = 0.95) admits almost only the classes the model already knows well; FlexMatch
(Zhang et al., 2021) lowers each class's threshold by how well that class is learned:

* ``sigma_c``: how many unlabelled images the model names ``c`` with confidence above ``tau``;
* ``beta_c = sigma_c / max(max_c sigma_c, N - sum_c sigma_c)`` (the second term, the unused images, is the
  warm-up normaliser: while most images are unused, every class counts as barely learned);
* ``T_c = M(beta_c) * tau`` with the convex mapping ``M(x) = x / (2 - x)``.

The most-confident class gets ``T = tau`` once warm-up is over; a class with no confident image gets 0, as in
FlexMatch (a class that nothing confidently lands in is let in at any confidence). The selection is then
class-balanced, so the blends are not dominated by the model's favourite label.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAPPINGS = ("convex", "linear")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def flexmatch_thresholds(labels: Sequence[int], confidences: Sequence[float], n_classes: int, tau: float = 0.95,
                         mapping: str = "convex", warmup: bool = True) -> np.ndarray:
    """Class-wise thresholds ``T_c`` from the model's answers (class index, or -1 for none) and confidences."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    labels, confidences = np.asarray(labels, dtype=int), np.asarray(confidences, dtype=float)
    if labels.shape != confidences.shape:
        raise ValueError(f"{labels.size} labels for {confidences.size} confidences")
    status = np.where((labels >= 0) & (confidences > tau), labels, -1)
    sigma = np.bincount(status[status >= 0], minlength=n_classes)[:n_classes].astype(float)
    unused = float((status < 0).sum())
    normaliser = max(sigma.max(initial=0.0), unused) if warmup else sigma.max(initial=0.0)
    beta = sigma / normaliser if normaliser > 0 else np.zeros(n_classes)
    mapped = beta / (2.0 - beta) if mapping == "convex" else beta
    return mapped * tau


def select_pseudo_labels(labels: Sequence[int], confidences: Sequence[float], thresholds: np.ndarray,
                         per_class: int | None = None, seed: int = 0) -> list[int]:
    """Indices of the images whose confidence exceeds their class's threshold, class-balanced: each class gives
    at most ``per_class`` (default: as many as the rarest admitted class has), drawn at random by ``seed``."""
    labels, confidences = np.asarray(labels, dtype=int), np.asarray(confidences, dtype=float)
    admitted: dict[int, list[int]] = {}
    for i, (label, c) in enumerate(zip(labels, confidences)):
        if label >= 0 and np.isfinite(c) and c > thresholds[label]:
            admitted.setdefault(int(label), []).append(i)
    if not admitted:
        return []
    quota = per_class if per_class is not None else min(len(v) for v in admitted.values())
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(admitted):
        pool = admitted[label]
        chosen += sorted(rng.sample(pool, min(quota, len(pool))))
    return sorted(chosen)


def main(argv: Sequence[str] | None = None) -> int:
    """``emocaliber prepare pseudo-labels``: label a folder of images with a checkpoint's own answers."""
    parser = argparse.ArgumentParser(
        prog="emocaliber prepare pseudo-labels",
        description="Ask a checkpoint about every image in a folder, keep the answers that pass FlexMatch's "
                    "class-wise thresholds, balance the classes, and write them as records (split train, source "
                    "'pseudo'), ready to blend with labelled images (emocaliber prepare blends).",
        epilog="example: emocaliber prepare pseudo-labels --model runs/demo/stage2 --images unlabelled/ "
               "--task SynthEmo-8 --out data/pseudo")
    parser.add_argument("--model", required=True, help="checkpoint directory (or hub id)")
    parser.add_argument("--images", required=True, help="folder of unlabelled images (searched recursively)")
    parser.add_argument("--task", required=True, help="task whose candidates the model chooses from")
    parser.add_argument("--out", required=True, help="output directory: pseudo.jsonl (image paths relative to "
                                                     "--images)")
    parser.add_argument("--tau", type=float, default=0.95, help="FlexMatch's global threshold (default 0.95)")
    parser.add_argument("--mapping", choices=MAPPINGS, default="convex")
    parser.add_argument("--per-class", type=int, default=None, help="cap per class (default: the rarest class)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", choices=("auto", "transformers", "vllm"))
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from emocaliber.inference import EmoCaliber, resolve_candidates
    from emocaliber.records import Record, write_records

    root = Path(args.images)
    if not root.is_dir():
        parser.exit(1, f"error: --images {root} is not a directory\n")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.is_symlink())
    if not files:
        parser.exit(1, f"error: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}\n")
    candidates = resolve_candidates(task=args.task)
    model = EmoCaliber.from_pretrained(args.model, backend=args.backend)
    labels, confidences, skipped = [], [], []
    for path in tqdm(files, desc="pseudo-labelling", unit="image"):
        try:
            pred = model.predict(str(path), task=args.task)
        except (OSError, ValueError) as e:
            skipped.append(f"{path}: {e}")
            labels.append(-1)
            confidences.append(float("nan"))
            continue
        ok = pred.label in candidates and pred.confidence is not None
        labels.append(candidates.index(pred.label) if ok else -1)
        confidences.append(float(pred.confidence) if ok else float("nan"))
    thresholds = flexmatch_thresholds(labels, np.nan_to_num(confidences, nan=0.0), len(candidates), args.tau,
                                      args.mapping)
    chosen = select_pseudo_labels(labels, confidences, thresholds, args.per_class, args.seed)
    records = [Record(id=f"pseudo/{files[i].relative_to(root).as_posix()}", task=args.task,
                      image=files[i].relative_to(root).as_posix(), candidates=list(candidates),
                      ground_truth=candidates[labels[i]], split="train", source="pseudo",
                      meta={"pseudo_label": {"confidence": confidences[i],
                                             "threshold": round(float(thresholds[labels[i]]), 6)}})
               for i in chosen]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "pseudo.jsonl", records)
    print(f"{len(records)} pseudo-labelled records of {len(files)} images -> {out / 'pseudo.jsonl'} "
          f"({len(skipped)} unreadable, {sum(v < 0 for v in labels) - len(skipped)} without a valid answer)")
    print("thresholds: " + ", ".join(f"{c} {t:.3f}" for c, t in zip(candidates, thresholds)))
    return 0
