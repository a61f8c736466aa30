"""Miniature EmoNet-Face release files in the exact layout, generated (nothing is downloaded).

``write_hq`` draws a sparse latent intensity per (image, emotion), has 4 of 8 human raters per image rate it
with noise (clip(round(L + N(0, 0.7)), 0, 7)), and writes ``hq.csv`` with the release's columns and
``"Group|Emotion"`` dict literals (plus an ``Extra Dimensions|Arousal`` key that must be ignored).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emocaliber.emonet.taxonomy import EMOTIONS


def latent(n_images: int, seed: int = 0, n_emotions: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lat = np.zeros((n_images, n_emotions))
    for i in range(n_images):
        active = rng.choice(n_emotions, size=rng.integers(2, 5), replace=False)
        lat[i, active] = np.clip(rng.gamma(3.0, 1.3, size=len(active)), 0, 7)
    return lat


def human_ratings(lat: np.ndarray, seed: int = 1, n_raters: int = 8, per_image: int = 4) -> np.ndarray:
    """(raters, images, emotions) with NaN where a rater did not rate an image."""
    rng = np.random.default_rng(seed)
    out = np.full((n_raters, *lat.shape), np.nan)
    for i in range(lat.shape[0]):
        for r in rng.choice(n_raters, size=per_image, replace=False):
            out[r, i] = np.clip(np.round(lat[i] + rng.normal(0, 0.7, lat.shape[1])), 0, 7)
    return out


def annotation_literal(values: np.ndarray, *, drop_zero_keys: bool = False, extra: bool = True) -> str:
    d = {e.hq_key: (int(v) if float(v).is_integer() else float(v)) for e, v in zip(EMOTIONS, values)
         if not (drop_zero_keys and v == 0)}
    if extra:
        d["Extra Dimensions|Arousal"] = 4
    return repr(d)


def write_hq(path: Path, ratings: np.ndarray, *, images: list[str] | None = None,
             models: dict[str, np.ndarray] | None = None, drop_zero_keys: bool = False) -> Path:
    """``hq.csv`` for human ``ratings`` (raters, images, 40) and optional model annotators (images, 40)."""
    n_images = ratings.shape[1]
    images = images or [f"{i:05d}.jpg" for i in range(n_images)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "annotator", "human", "annotations"])
        for i in range(n_images):
            for r in range(ratings.shape[0]):
                if not np.isnan(ratings[r, i, 0]):
                    w.writerow([images[i], f"human-{r + 1}", True,
                                annotation_literal(ratings[r, i], drop_zero_keys=drop_zero_keys)])
            for name, values in (models or {}).items():
                w.writerow([images[i], name, False, annotation_literal(values[i], extra=False)])
    return path


BINARY_PATTERNS = {  # (votes, true votes) -> how many pairs
    (1, 0): 6, (1, 1): 3, (2, 1): 3, (3, 2): 2, (3, 3): 6,
}


def write_binary(path: Path) -> tuple[Path, dict[tuple[str, str], tuple[int, int]]]:
    """``binary.csv`` with the release's vote patterns; returns the (image, emotion) -> (votes, true) truth.
    Helplessness is written as the release writes it ("Hopelessness")."""
    rng = np.random.default_rng(3)
    truth = {}
    rows = []
    image = 0
    for (n, k), count in BINARY_PATTERNS.items():
        for _ in range(count):
            emotion = EMOTIONS[int(rng.integers(0, 40))].name
            shown = "Hopelessness" if emotion == "Helplessness" else emotion
            votes = [True] * k + [False] * (n - k)
            raters = rng.choice(7, size=n, replace=False)
            for r, v in zip(raters, votes):
                rows.append([f"{image:05d}", f"human-{r + 1}", v, shown])
            truth[(f"{image:05d}", emotion)] = (n, k)
            image += 1
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "annotator", "value", "emotion"])
        w.writerows(rows)
    return path, truth
