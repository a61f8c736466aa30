"""Local accuracy, a stage-2 confidence target that the gold labels calibrate: how often the stage-1 model's
answer (the greedy one a record states, or else its samples' majority) is right on the images it describes
most alike.

Agreement (how often the stage-1 model repeats its majority answer) measures the model's own uncertainty. It is
blind to ambiguity the model does not show: when a class of images carries the other label a third of the time
but the model answers it consistently, agreement says 0.95 where the answer is right two times in three. The
gold labels see this, but one label per image is a 0/1 outcome, too noisy to be a target by itself. Averaged
over an image's ``k`` nearest neighbours it is a k-nearest-neighbour estimate of the chance that the answer is
right: calibrated by construction on the pool, and smooth, which matters because greedy decoding states the
*mode* of the confidence the model learned for similar images, not its mean (per-image targets that scatter
around the right level are stated as whichever value is most common). Its resolution is the neighbourhood's.

Neighbours are found by what the stage-1 model itself wrote about each image (TF-IDF of the reasoning of its
answered samples, cosine similarity, within the same task): it is there for every backend without another
model pass, and it describes the image in the terms the model answers from. TF-IDF and the neighbour search
are a few lines of numpy; scikit-learn would do the same, but the package does not depend on it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z]+")


def tfidf(texts: Sequence[str], max_features: int = 4096) -> np.ndarray:
    """L2-normalised TF-IDF rows (words of letters, lower case; the ``max_features`` words found in most
    texts, ties by word; smoothed idf as scikit-learn's). A text without any kept word is a zero row."""
    docs = [Counter(_WORD.findall(t.lower())) for t in texts]
    df = Counter(w for d in docs for w in d)
    vocab = sorted(df, key=lambda w: (-df[w], w))[:max_features]
    index = {w: i for i, w in enumerate(vocab)}
    x = np.zeros((len(docs), len(vocab)), dtype=np.float64)
    for row, d in enumerate(docs):
        for w, c in d.items():
            if w in index:
                x[row, index[w]] = c
    idf = np.log((1 + len(docs)) / (1 + np.array([df[w] for w in vocab], dtype=np.float64))) + 1
    x *= idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def neighbour_mean(features: np.ndarray, values: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """For each row, the mean of ``values`` over its ``k`` most cosine-similar rows, itself first (ties go to
    the lower index, so the result does not depend on the platform's sort). Blocks of rows bound the memory."""
    n = len(features)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, n)
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, block):
        sim = features[lo: lo + block] @ features.T
        rows = np.arange(lo, min(lo + block, n))
        sim[rows - lo, rows] = np.inf  # a record is its own nearest neighbour, even with an empty text
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        out[lo: lo + block] = values[order].mean(axis=1)
    return out


def local_accuracy(correct: Sequence[bool], texts: Sequence[str], groups: Sequence[str], k: int) -> list[float]:
    """Per record, the share of right answers (``correct``) among its ``k`` nearest records of the same group
    (task) by ``texts``, itself included; unclipped (the caller clips and rounds it like any target)."""
    if len(correct) != len(texts) or len(texts) != len(groups):
        raise ValueError("correct, texts and groups must have the same length")
    right = np.asarray(correct, dtype=np.float64)
    out = np.zeros(len(right))
    for group in sorted(set(groups)):
        idx = np.array([i for i, g in enumerate(groups) if g == group])
        out[idx] = neighbour_mean(tfidf([texts[i] for i in idx]), right[idx], k)
    return out.tolist()
