"""Blended images (Rank-O-ToM): one image cut from two sources, which should earn less confidence than either.

Rank-O-ToM (arXiv 2503.16461) pastes part of one labelled image over another with a horizontal CutMix and asks
the model to be less sure of the blend than of its clean sources. Here a blend is an ordinary record (one record
shape for every stage) whose ``meta["blend"]`` holds its provenance:

``{"sources": [id_a, id_b], "labels": [label_a, label_b], "shares": [lam_a, lam_b], "axis": "horizontal",
"first": 0}``

``shares`` are the fractions of rows (horizontal) or columns (vertical) taken from each source; ``first`` says
which source fills the top (or left) part. The record's ``ground_truth`` is the source with the larger share
(the first source on a tie), so tools that know nothing of blends still see a valid record; the blend-aware
reward and evaluation read ``meta["blend"]`` instead (:func:`blend_target`).

The cut follows the authors' code: the first part takes ``int(size * lam)`` rows, so a 5-row image at
``lam = 0.5`` takes 2 rows from the first part's source and 3 from the other.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from emocaliber.records import Record, RecordError, read_records, resolve_image, write_records

AXES = ("horizontal", "vertical")


def cutmix(first: Image.Image, second: Image.Image, lam: float = 0.5, axis: str = "horizontal") -> Image.Image:
    """``first`` fills the top (horizontal) or left (vertical) ``int(size * lam)`` rows/columns, ``second`` the rest.

    The result has ``first``'s size and mode; ``second`` is converted to that mode and resized to that size
    first, so RGB, RGBA and L inputs mix freely.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    width, height = first.size
    other = second.convert(first.mode) if second.mode != first.mode else second
    if other.size != first.size:
        other = other.resize(first.size, Image.Resampling.BILINEAR)
    out = other.copy()
    cut = int((height if axis == "horizontal" else width) * lam)
    box = (0, 0, width, cut) if axis == "horizontal" else (0, 0, cut, height)
    if cut > 0:
        out.paste(first.crop(box), box)
    return out


@dataclass(frozen=True)
class BlendSettings:
    """How blends are drawn. The defaults are Rank-O-ToM's: horizontal cut, half from each source."""

    axis: str = "horizontal"
    lam_min: float = 0.5
    lam_max: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.axis not in (*AXES, "random"):
            raise ValueError(f"axis must be one of {(*AXES, 'random')}, got {self.axis!r}")
        if not 0.0 < self.lam_min <= self.lam_max < 1.0:
            raise ValueError(f"need 0 < lam_min <= lam_max < 1, got {self.lam_min}, {self.lam_max}")


def blend_info(record: Record | dict[str, Any]) -> dict[str, Any] | None:
    """The ``meta["blend"]`` provenance of a record (or record dict), or None for a clean image."""
    meta = record.meta if isinstance(record, Record) else (record or {}).get("meta") or {}
    info = meta.get("blend") if isinstance(meta, dict) else None
    return info if isinstance(info, dict) else None


def blend_target(answer: str | None, info: dict[str, Any] | None) -> tuple[bool, float]:
    """(correct, target) for an answer on a blend: naming either source is correct, and the calibration target
    is the named source's share, so a calibrated model says about ``lam`` (0.5 for Rank-O-ToM's cut).

    An answer naming neither source is wrong with target 0. Labels compare case-insensitively, as the parser's.
    """
    if answer is None or not info:
        return False, 0.0
    key = answer.strip().lower()
    share = sum(float(s) for label, s in zip(info["labels"], info["shares"], strict=True) if label.lower() == key)
    return share > 0, share


def pair_records(records: Sequence[Record], n: int, seed: int) -> list[tuple[Record, Record]]:
    """``n`` distinct pairs of records of one task with different labels, drawn deterministically by ``seed``.

    Rank-O-ToM skips same-label pairs (their blend is not ambiguous). Fewer pairs come back when the records
    cannot make ``n`` (a task with one label, or too few records); the caller reports the shortfall.
    """
    rng = random.Random(seed)
    by_task: dict[str, list[Record]] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    tasks = sorted(t for t, rs in by_task.items() if len({r.ground_truth for r in rs}) > 1)
    pairs: list[tuple[Record, Record]] = []
    seen: set[tuple[str, str]] = set()
    attempts = 0
    while tasks and len(pairs) < n and attempts < 50 * max(n, 1):
        attempts += 1
        pool = by_task[tasks[rng.randrange(len(tasks))]]
        a, b = rng.sample(pool, 2)
        key = tuple(sorted((a.id, b.id)))
        if a.ground_truth == b.ground_truth or key in seen:
            continue
        seen.add(key)
        pairs.append((a, b))
    return pairs


def make_blend(a: Record, b: Record, image_a: Image.Image, image_b: Image.Image, settings: BlendSettings,
               rng: random.Random, image_dir: str) -> tuple[Record, Image.Image]:
    """The blend record of ``a`` and ``b`` and its image; ``rng`` picks the axis (if random), lam and the order."""
    axis = settings.axis if settings.axis != "random" else rng.choice(AXES)
    lam = settings.lam_min if settings.lam_min == settings.lam_max else rng.uniform(settings.lam_min,
                                                                                   settings.lam_max)
    first = rng.randrange(2)  # which source fills the top / left part
    top, rest = (image_a, image_b) if first == 0 else (image_b, image_a)
    image = cutmix(top, rest, lam, axis)
    size = image.size[1] if axis == "horizontal" else image.size[0]
    cut = int(size * lam)
    share_first = cut / size
    shares = [share_first, 1 - share_first] if first == 0 else [1 - share_first, share_first]
    bid = f"blend/{a.id}+{b.id}"
    info = {"sources": [a.id, b.id], "labels": [a.ground_truth, b.ground_truth],
            "shares": [round(s, 6) for s in shares], "axis": axis, "first": first}
    truth = a.ground_truth if shares[0] >= shares[1] else b.ground_truth
    name = f"{image_dir}/{hash_id(bid):016x}.png"
    record = Record(id=bid, task=a.task, image=name, candidates=list(a.candidates), ground_truth=truth,
                    split=a.split, source="blend", meta={"blend": info})
    return record, image


def hash_id(text: str) -> int:
    """A stable 64-bit hash (Python's ``hash`` is salted per process, so file names would change run to run)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def write_blends(records: Sequence[Record], image_root: str | Path, out_root: str | Path, n: int,
                 settings: BlendSettings, image_dir: str = "blends") -> tuple[list[Record], list[str]]:
    """Blend ``n`` pairs of ``records`` into ``out_root/<image_dir>/``; returns (blend records, problems).

    A pair whose image cannot be read is skipped and named in ``problems``; the rest go on.
    """
    from emocaliber.generation import ImageLoadError, load_image

    out_root = Path(out_root)
    (out_root / image_dir).mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed + 1)
    blends: list[Record] = []
    problems: list[str] = []
    for a, b in pair_records(records, n, settings.seed):
        try:
            image_a, image_b = load_image(a, image_root), load_image(b, image_root)
        except ImageLoadError as e:
            problems.append(str(e))
            continue
        record, image = make_blend(a, b, image_a, image_b, settings, rng, image_dir)
        image.save(resolve_image(out_root, record.image), format="PNG")
        blends.append(record)
    return blends, problems


def main(argv: Sequence[str] | None = None) -> int:
    """``emocaliber prepare blends``: blend records of a labelled file into new records and images."""
    parser = argparse.ArgumentParser(
        prog="emocaliber prepare blends",
        description="Blend pairs of labelled images (Rank-O-ToM's CutMix) into records with their provenance. "
                    "Same-label pairs are skipped; the same --seed gives the same files.",
        epilog="example: emocaliber prepare blends --records data/synthemo/test.jsonl --image-root data/synthemo "
               "--out data/blends --n 500 --seed 0")
    parser.add_argument("--records", required=True, help="labelled records file (JSONL)")
    parser.add_argument("--image-root", required=True, help="directory the records' image paths are relative to")
    parser.add_argument("--out", required=True, help="output directory: blends.jsonl and blends/*.png")
    parser.add_argument("--n", type=int, default=500, help="number of blends (default 500)")
    parser.add_argument("--axis", default="horizontal", choices=(*AXES, "random"))
    parser.add_argument("--lam-min", type=float, default=0.5, help="smallest share of the first part")
    parser.add_argument("--lam-max", type=float, default=0.5, help="largest share of the first part")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        settings = BlendSettings(args.axis, args.lam_min, args.lam_max, args.seed)
    except ValueError as e:
        parser.error(str(e))
    errors: list[str] = []
    try:
        records = read_records(args.records, errors=errors)
    except (OSError, RecordError) as e:
        parser.exit(1, f"error: {e}\n")
    blends, problems = write_blends(records, args.image_root, args.out, args.n, settings)
    write_records(Path(args.out) / "blends.jsonl", blends)
    print(f"{len(blends)} blends written to {Path(args.out) / 'blends.jsonl'} "
          f"({len(errors)} bad record lines, {len(problems)} pairs skipped for unreadable images)")
    for message in (errors + problems)[:10]:
        print(f"  skipped: {message}")
    if len(blends) < args.n:
        print(f"note: only {len(blends)} of {args.n} blends: the file has too few records with different labels "
              "per task")
    return 0
