"""Streamed readers for the EmoNet-Face release files ``data/hq.csv`` and ``data/binary.csv``.

``hq.csv`` (columns ``image, annotator, human, annotations``) holds one row per (image, annotator); its
``annotations`` field is a Python dict literal with ``"<Group>|<Emotion>": 0..7`` pairs (continuous or
negative for some model rows). The file is read one CSV row at a time and each dict becomes one 40-vector at
once, so memory holds the images x annotators x 40 ratings, never 44k dictionaries.

Rules, as the release's ``statistics/analysis-hq.ipynb`` applies them: keys ``"Extra Dimensions|*"`` are
ignored; a missing emotion key is 0; annotators whose name contains ``Hume Face*`` are multiplied by 7; two
rows for one (image, annotator) are averaged (pandas ``pivot_table``'s default), and counted as a warning.

A bad row (unparsable dict, unknown emotion key, non-numeric rating, missing field) is skipped and counted
with its ``file:line``; nothing is downloaded.
"""

from __future__ import annotations

import ast
import csv
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from emocaliber.emonet.taxonomy import INDEX, NAMES, canonical

HQ_COLUMNS = ("image", "annotator", "human", "annotations")
BINARY_COLUMNS = ("path", "annotator", "value", "emotion")
EXTRA_PREFIX = "Extra Dimensions|"
HUME_MARK = "Hume Face*"
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


class EmoNetDataError(ValueError):
    """The file is not in the release layout (missing header columns); the message says which file."""


@dataclass
class BadRows:
    """Skipped rows by reason, with the first few ``file:line: why`` examples per reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, where: str, detail: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(f"{where}: {detail}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())),
                "examples": {k: self.examples[k] for k in sorted(self.examples)}}


def _parse_bool(text: str) -> bool | None:
    t = text.strip().lower()
    return True if t in _TRUE else False if t in _FALSE else None


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line number of the row, row) for each CSV row; quoted fields may span lines."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # one annotations dict can exceed csv's 128 KiB default
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise EmoNetDataError(f"{path}: header lacks column(s) {missing}; expected the release layout "
                                  f"{','.join(columns)} (got {reader.fieldnames})")
        line = reader.line_num + 1
        for row in reader:
            yield line, row
            line = reader.line_num + 1


@dataclass(frozen=True)
class HQRow:
    """One (image, annotator) row: ``ratings`` is a float vector over :data:`taxonomy.NAMES`."""

    image: str
    annotator: str
    human: bool
    ratings: np.ndarray


@lru_cache(maxsize=4096)
def _column(key: str) -> int | None:
    """Column of an annotations key (the file repeats the same 40 keys on every row)."""
    name = canonical(key)
    return None if name is None else INDEX[name]


def parse_annotations(text: str) -> np.ndarray:
    """A release annotations dict literal -> 40 ratings (missing keys 0, ``Extra Dimensions|*`` dropped).
    Raises ``ValueError`` naming the bad key or value."""
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise ValueError(f"annotations is not a dict literal ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise ValueError(f"annotations is a {type(d).__name__}, not a dict")  # noqa: TRY004 (bad data)
    out = np.zeros(len(NAMES))
    for key, value in d.items():
        if isinstance(key, str) and key.startswith(EXTRA_PREFIX):
            continue
        column = _column(key) if isinstance(key, str) else None
        if column is None:
            raise ValueError(f"unknown emotion key {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"rating of {key!r} is {value!r}, not a finite number")
        out[column] = float(value)
    return out


def iter_hq(path: str | os.PathLike, bad: BadRows | None = None, *, scale_hume: bool = True) -> Iterator[HQRow]:
    """Stream ``hq.csv``; bad rows go to ``bad`` (reason, ``file:line``) and are skipped."""
    path = Path(path)
    bad = bad if bad is not None else BadRows()
    for line, row in _rows(path, HQ_COLUMNS):
        where = f"{path}:{line}"
        image, annotator = (row.get("image") or "").strip(), (row.get("annotator") or "").strip()
        if not image or not annotator:
            bad.add("missing_field", where, "empty image or annotator")
            continue
        human = _parse_bool(row.get("human") or "")
        if human is None:
            bad.add("bad_human_flag", where, f"human is {row.get('human')!r}, not True/False")
            continue
        try:
            ratings = parse_annotations(row.get("annotations") or "")
        except ValueError as e:
            bad.add("bad_annotations", where, str(e))
            continue
        if scale_hume and HUME_MARK in annotator:
            ratings *= 7.0
        yield HQRow(image, annotator, human, ratings)


@dataclass
class HQData:
    """All ratings of ``hq.csv``: ``ratings[a, i, e]`` is annotator ``a``'s rating of image ``i`` for emotion
    ``e`` (NaN where ``a`` did not rate ``i``)."""

    images: list[str]
    annotators: list[str]
    human: np.ndarray          # bool per annotator
    ratings: np.ndarray        # (annotators, images, 40)
    bad: BadRows
    n_rows: int

    @property
    def humans(self) -> list[int]:
        return [a for a in range(len(self.annotators)) if self.human[a]]

    def add_annotator(self, name: str, ratings: np.ndarray, image_index: list[int] | None = None) -> int:
        """Append a (model) annotator rating ``image_index`` (default: all images); returns its index."""
        full = np.full((1, len(self.images), len(NAMES)), np.nan)
        idx = list(range(len(self.images))) if image_index is None else image_index
        full[0, idx] = ratings
        self.ratings = np.concatenate([self.ratings, full])
        self.annotators.append(name)
        self.human = np.append(self.human, False)
        return len(self.annotators) - 1


def load_hq(path: str | os.PathLike, *, scale_hume: bool = True, bad: BadRows | None = None) -> HQData:
    """Read ``hq.csv`` into an :class:`HQData` (streamed; see the module docstring for the rules)."""
    bad = bad if bad is not None else BadRows()
    images: dict[str, int] = {}
    annotators: dict[str, int] = {}
    human: dict[str, bool] = {}
    slot: dict[tuple[int, int], int] = {}  # (annotator, image) -> row of the buffer
    buffer = np.empty((1024, len(NAMES)))   # grows by doubling: 320 bytes per row, no per-row objects
    count = np.zeros(1024, dtype=np.int32)
    n = 0
    for row in iter_hq(path, bad, scale_hume=scale_hume):
        n += 1
        i = images.setdefault(row.image, len(images))
        a = annotators.setdefault(row.annotator, len(annotators))
        if human.setdefault(row.annotator, row.human) != row.human:
            bad.add("human_flag_changes", f"{path}", f"annotator {row.annotator!r} is both human and not; "
                    "the first row's flag is kept")
        k = slot.get((a, i))
        if k is not None:
            buffer[k] += row.ratings
            count[k] += 1
            bad.add("duplicate_rating", f"{path}", f"{row.annotator!r} rated {row.image!r} more than once; "
                    "the ratings are averaged, as the release's pivot_table does")
            continue
        k = slot[(a, i)] = len(slot)
        if k == len(buffer):
            buffer = np.concatenate([buffer, np.empty_like(buffer)])
            count = np.concatenate([count, np.zeros_like(count)])
        buffer[k], count[k] = row.ratings, 1
    ratings = np.full((len(annotators), len(images), len(NAMES)), np.nan)
    if slot:
        ai = np.array(list(slot), dtype=np.int64)
        ratings[ai[:, 0], ai[:, 1]] = buffer[: len(slot)] / count[: len(slot), None]
    names = list(annotators)
    return HQData(list(images), names, np.array([human[a] for a in names], dtype=bool), ratings, bad, n)


@dataclass(frozen=True)
class BinaryItem:
    """All judgements of one (image, emotion) pair of ``binary.csv``, in file order."""

    image: str
    emotion: str
    annotators: tuple[str, ...]
    values: tuple[bool, ...]

    @property
    def n_votes(self) -> int:
        return len(self.values)

    @property
    def n_true(self) -> int:
        return sum(self.values)


def iter_binary_votes(path: str | os.PathLike, bad: BadRows | None = None) -> Iterator[tuple[str, str, bool, str]]:
    """Stream ``binary.csv`` as (image id, annotator, value, emotion display name); ids stay strings
    ("00000"), bad rows go to ``bad``."""
    path = Path(path)
    bad = bad if bad is not None else BadRows()
    for line, row in _rows(path, BINARY_COLUMNS):
        where = f"{path}:{line}"
        image, annotator = (row.get("path") or "").strip(), (row.get("annotator") or "").strip()
        if not image or not annotator:
            bad.add("missing_field", where, "empty path or annotator")
            continue
        value = _parse_bool(row.get("value") or "")
        if value is None:
            bad.add("bad_value", where, f"value is {row.get('value')!r}, not True/False")
            continue
        emotion = canonical(row.get("emotion") or "")
        if emotion is None:
            bad.add("unknown_emotion", where, f"emotion {row.get('emotion')!r} is none of the 40")
            continue
        yield image, annotator, value, emotion


def load_binary(path: str | os.PathLike, bad: BadRows | None = None) -> list[BinaryItem]:
    """(image, emotion) items in first-seen order. A second vote by the same annotator on a pair is skipped
    and counted (it would count one expert twice)."""
    bad = bad if bad is not None else BadRows()
    votes: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for image, annotator, value, emotion in iter_binary_votes(path, bad):
        pair = votes.setdefault((image, emotion), [])
        if any(a == annotator for a, _ in pair):
            bad.add("repeated_vote", str(path), f"{annotator} judged ({image}, {emotion}) twice; first kept")
            continue
        pair.append((annotator, value))
    return [BinaryItem(img, emo, tuple(a for a, _ in v), tuple(x for _, x in v)) for (img, emo), v in votes.items()]
