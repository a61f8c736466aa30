"""Resumable JSON Lines output for long generation runs (evaluation, confidence targets).

Work is done in fixed chunks of the input, each chunk seeded from (seed, chunk index) and written with one
flushed, fsynced append. A run killed at any moment therefore loses at most the chunk in flight, and redoing that
chunk with the same seed reproduces it exactly: the resumed file is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from emocaliber.atomic import OutputError, describe_os_error
from emocaliber.locking import locked
from emocaliber.records import dumps

T = TypeVar("T")


#: An identity field the recorded run does not have (written by an older version of the project).
NOT_RECORDED = "<not recorded>"


def changed_settings(config_path: Path, identity: dict[str, Any], fields: Sequence[str],
                     ignore: Callable[[str, Any, Any], bool] = lambda name, old, new: False) -> list[str]:
    """``"field old -> new"`` for every identity field in which the run recorded in ``config_path`` (its
    ``identity`` object) differs from ``identity``, except those ``ignore(name, old, new)`` accepts (``old`` is
    :data:`NOT_RECORDED` for a field the record lacks); empty when the output may be resumed. The one check
    behind "a run never resumes work that other settings produced". Raises ``ValueError`` when the recorded
    settings cannot be read (then nothing shows the output is this run's)."""
    try:
        previous = json.loads(config_path.read_text(encoding="utf-8"))["identity"]
        if not isinstance(previous, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"no readable {config_path.name}") from None
    changed = []
    for k in fields:
        old, new = previous.get(k, NOT_RECORDED), identity.get(k)
        if old == NOT_RECORDED and new is None:  # an unset field and one the record lacks say the same
            continue
        if old != new and not ignore(k, old, new):
            changed.append(f"{k} {old!r} -> {new!r}")
    return changed


def chunk_seed(seed: int, chunk_index: int) -> int:
    """A per-chunk seed that does not depend on which chunks ran before (so resumed chunks match)."""
    return (seed * 1_000_003 + chunk_index * 7_919 + 12_345) % (2**31 - 1)


def _line_ends(path: Path) -> list[int]:
    """Byte offsets just past each complete, valid line; a line cut by a kill ends the list."""
    ends, pos = [], 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except json.JSONDecodeError:
                break
            pos += len(line)
            ends.append(pos)
    return ends


def run_chunked(
    items: Sequence[T],
    out_path: str | os.PathLike,
    process_chunk: Callable[[list[T], int], list[dict[str, Any]]],
    *,
    chunk_size: int,
    seed: int,
    rows_per_item: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Process ``items`` chunk by chunk into ``out_path``, skipping chunks already complete in the file.

    ``process_chunk(chunk, chunk_seed)`` must return exactly ``rows_per_item`` rows per item, in item order.
    Rows of a chunk left incomplete by an earlier kill are discarded and the chunk is redone.
    ``progress(n)`` is called with each increment of finished items (first with those found done on resume),
    so a tqdm bar's ``update`` fits.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out.parent, f".{out.name}.lock"):  # a second writer of the same file fails at once, naming us
        return _run_chunked(items, out, process_chunk, chunk_size=chunk_size, seed=seed,
                            rows_per_item=rows_per_item, overwrite=overwrite, progress=progress)


def _run_chunked(items: Sequence[T], out: Path, process_chunk: Callable[[list[T], int], list[dict[str, Any]]], *,
                 chunk_size: int, seed: int, rows_per_item: int, overwrite: bool,
                 progress: Callable[[int], None] | None) -> Path:
    per_chunk = chunk_size * rows_per_item
    if overwrite or not out.exists():
        out.write_bytes(b"")
    ends = _line_ends(out)
    total_rows = len(items) * rows_per_item
    n_chunks_done = -(-len(items) // chunk_size) if len(ends) >= total_rows else len(ends) // per_chunk
    n_keep = min(n_chunks_done * per_chunk, total_rows)
    with out.open("r+b") as fh:  # drop a cut line and the rows of an unfinished chunk
        fh.truncate(ends[n_keep - 1] if n_keep else 0)
    start = min(n_chunks_done * chunk_size, len(items))
    if progress:
        progress(start)
    with out.open("a", encoding="utf-8") as fh:
        for index, lo in enumerate(range(start, len(items), chunk_size), start=n_chunks_done):
            chunk = list(items[lo: lo + chunk_size])
            rows = process_chunk(chunk, chunk_seed(seed, index))
            if len(rows) != len(chunk) * rows_per_item:
                raise RuntimeError(f"chunk {index}: expected {len(chunk) * rows_per_item} rows, got {len(rows)}")
            try:
                fh.write("".join(dumps(r) + "\n" for r in rows))
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as e:  # a chunk cut short here is redone by the next run (see _line_ends)
                raise OutputError(e.errno, describe_os_error(e, out) + " (the same command resumes after the last "
                                  "complete chunk)") from e
            if progress:
                progress(len(chunk))
    return out
