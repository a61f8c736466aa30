"""The one record shape every file of the pipeline reads and writes (JSON Lines, one object per line).

A record is a plain dict on disk so any file can be inspected, split or merged with standard tools; in memory it
is a :class:`Record`, validated on the way in so a bad line is reported with its file and line number instead of
failing somewhere downstream.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emocaliber.tasks import canonical_task_name, get_task

REASONING_PARTS = ("element", "human", "context", "interaction", "analysis")
SPLITS = ("train", "test")


class RecordError(ValueError):
    """A record (or a line of a records file) is invalid; the message says where and what to fix."""


@dataclass
class Record:
    """One image-question item. ``image`` is relative to the dataset root and never escapes it.

    ``reasoning`` holds the five structured parts (stage-1/2 corpora), ``confidence`` the stage-2 target in (0, 1),
    ``answer`` the label an SFT target states when it is not ``ground_truth`` (a stage-2 record that carries the
    stage-1 model's own response; the ground truth stays what the data says), ``meta`` anything source-specific
    (votes, original file name, SynthEmo's oracle confidence, ...).
    """

    id: str
    task: str
    image: str
    candidates: list[str]
    ground_truth: str
    split: str
    source: str
    reasoning: dict[str, str] | None = None
    confidence: float | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.task = canonical_task_name(self.task)
        self.image = safe_relpath(self.image)
        if not self.id:
            raise RecordError("field 'id' is empty")
        if list(self.candidates) != list(dict.fromkeys(self.candidates)) or not self.candidates:
            raise RecordError(f"record {self.id!r}: 'candidates' must be a non-empty list without duplicates")
        self.candidates = list(self.candidates)
        if self.ground_truth not in self.candidates:
            raise RecordError(
                f"record {self.id!r}: ground_truth {self.ground_truth!r} is not one of the candidates "
                f"{self.candidates}"
            )
        if self.split not in SPLITS:
            raise RecordError(f"record {self.id!r}: split must be one of {SPLITS}, got {self.split!r}")
        if self.answer is not None and self.answer not in self.candidates:
            raise RecordError(f"record {self.id!r}: answer {self.answer!r} is not one of the candidates "
                              f"{self.candidates}")
        if self.answer == self.ground_truth:  # stored unset: read stated_answer
            self.answer = None
        if self.reasoning is not None:
            missing = [p for p in REASONING_PARTS if not isinstance(self.reasoning.get(p), str)]
            if missing or set(self.reasoning) - set(REASONING_PARTS):
                raise RecordError(
                    f"record {self.id!r}: 'reasoning' must map exactly {list(REASONING_PARTS)} to strings "
                    f"(missing or not text: {missing})"
                )
        if self.confidence is not None:
            c = self.confidence
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not 0 < c < 1:
                raise RecordError(f"record {self.id!r}: confidence must be a number in (0, 1), got {c!r}")
            self.confidence = float(c)

    @property
    def stated_answer(self) -> str:
        """The label the record's SFT target states: its own ``answer`` when it carries one, else the ground
        truth. Read this, never ``answer is None``, to ask what a record says."""
        return self.answer if self.answer is not None else self.ground_truth

    @property
    def states_ground_truth(self) -> bool:
        """Whether the label the record states is its ground truth."""
        return self.stated_answer == self.ground_truth

    @property
    def task_spec(self):
        return get_task(self.task)

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form; optional fields that are unset are left out.

        Shallow on purpose (no ``dataclasses.asdict`` deep copy, which dominated large builds): the dict shares
        ``candidates``, ``reasoning`` and ``meta`` with the record and is meant to be serialised at once.
        """
        d = {f: getattr(self, f) for f in _FIELDS}
        for key in ("reasoning", "confidence", "answer"):
            if d[key] is None:
                del d[key]
        if not d["meta"]:
            del d["meta"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        if not isinstance(d, dict):
            raise RecordError(f"a record must be a JSON object, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise RecordError(f"unknown field(s) {sorted(unknown)}; a record has {sorted(known)}")
        missing = [f for f in ("id", "task", "image", "candidates", "ground_truth", "split", "source") if f not in d]
        if missing:
            raise RecordError(f"missing field(s) {missing}")
        try:
            return cls(**d)
        except KeyError as e:  # unknown task from the registry
            raise RecordError(str(e.args[0])) from None


_FIELDS = tuple(Record.__dataclass_fields__)


def safe_relpath(path: str) -> str:
    """Normalise a data-supplied relative path; reject absolute paths and any '..' that would leave the root."""
    if not isinstance(path, str) or not path.strip():
        raise RecordError(f"image path must be a non-empty string, got {path!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise RecordError(f"image path {path!r} holds a control character (NUL, newline, ...); fix the index entry")
    p = path.replace("\\", "/")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):
        raise RecordError(f"image path {path!r} is absolute; paths must be relative to the dataset root")
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise RecordError(f"image path {path!r} escapes the dataset root")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise RecordError(f"image path {path!r} names no file")
    return "/".join(parts)


def resolve_image(root: str | os.PathLike, relpath: str) -> Path:
    """Absolute path of a record's image under ``root``; symlinks may not lead outside the root either."""
    root_p = Path(root).resolve()
    full = (root_p / safe_relpath(relpath)).resolve()
    if full != root_p and root_p not in full.parents:
        raise RecordError(f"image path {relpath!r} resolves outside the dataset root {root_p}")
    return full


def iter_jsonl(path: str | os.PathLike, *, errors: list[str] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) from a JSON Lines file, skipping blank lines.

    A malformed line (not UTF-8, or not JSON) raises :class:`RecordError` naming file and line, unless ``errors``
    is given: then the message is appended there and reading goes on, so one bad line never loses the rest of a
    long file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    # surrogateescape: a byte that is not UTF-8 becomes a lone surrogate instead of an error that ends the file
    # with no line number; lines split as before, and encoding the line back finds the byte.
    with path.open(encoding="utf-8", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                line.encode("utf-8")
                yield lineno, json.loads(line)
                continue
            except UnicodeEncodeError as e:
                byte = ord(line[e.start]) - 0xDC00
                msg = f"{path}:{lineno}: not valid UTF-8 (byte 0x{byte:02x} at column {e.start + 1}); save as UTF-8"
            except json.JSONDecodeError as e:
                msg = f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})"
            if errors is None:
                raise RecordError(msg)
            errors.append(msg)


def read_records(path: str | os.PathLike, *, errors: list[str] | None = None) -> list[Record]:
    """Read and validate a records file; see :func:`iter_jsonl` for how bad lines are handled."""
    out = []
    for lineno, obj in iter_jsonl(path, errors=errors):
        try:
            out.append(Record.from_dict(obj))
        except RecordError as e:
            msg = f"{path}:{lineno}: {e}"
            if errors is None:
                raise RecordError(msg) from None
            errors.append(msg)
    return out


def dumps(obj: dict[str, Any]) -> str:
    """One JSONL line; stable key order so the same data always gives the same bytes."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, allow_nan=False)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """The temp path to write ``path``'s content to; renamed to ``path`` when the block succeeds, deleted when it
    fails, so a failed write leaves neither a partial file nor its temp file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Record | dict[str, Any]]) -> int:
    """Write rows atomically (:func:`atomic_output`); returns the number written."""
    n = 0
    with atomic_output(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps(row.to_dict() if isinstance(row, Record) else row) + "\n")
            n += 1
    return n


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    return write_jsonl(path, records)
