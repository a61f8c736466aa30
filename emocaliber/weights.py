"""Cheap structural checks of safetensors files, so truncated or corrupt weights get a one-line error naming the
file instead of a raw ``SafetensorError`` deep inside a load (or a resume that picks a half-written checkpoint).

A safetensors file is an 8-byte little-endian header length, a JSON header giving every tensor's byte range, then
the data; a file cut short by a kill or a full disk is shorter than its header says. Reading the header is
milliseconds even for a 7B checkpoint.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

_MAX_HEADER = 100 * 1024 * 1024


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None when its header and size agree."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{p} is truncated ({size} bytes, no header)"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                return f"{p} is truncated or not a safetensors file (header of {n} bytes in a {size}-byte file)"
            header = json.loads(fh.read(n))
    except OSError as e:
        return f"{p} cannot be read: {e.strerror or e}"
    except (ValueError, UnicodeDecodeError):
        return f"{p} is corrupt (its header is not valid JSON)"
    if not isinstance(header, dict):
        return f"{p} is corrupt (its header is not a JSON object)"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        return f"{p} is truncated ({size} of {expected} bytes)"
    return None


def weight_files(model_dir: str | os.PathLike) -> list[Path]:
    """The safetensors files a model directory's weights are in (the index's shards when sharded)."""
    d = Path(model_dir)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            return [index]
        return [d / s for s in shards]
    return [d / n for n in ("model.safetensors", "adapter_model.safetensors") if (d / n).is_file()]


def weights_problem(model_dir: str | os.PathLike) -> str | None:
    """The first problem of a model directory's safetensors weights (missing shard, truncation), or None."""
    for f in weight_files(model_dir):
        if f.name.endswith(".index.json"):
            return f"{f} is unreadable or has no weight_map"
        if not f.is_file():
            return f"{f} is missing (listed in model.safetensors.index.json)"
        problem = safetensors_problem(f)
        if problem:
            return problem
    return None


class CorruptWeightsError(ValueError):
    """A model directory's weights are truncated or corrupt; the message names the file and what to do."""


def check_weights(model_dir: str | os.PathLike) -> None:
    """Raise :class:`CorruptWeightsError` (one line) when a local model directory's safetensors are damaged."""
    if not Path(model_dir).is_dir():
        return
    problem = weights_problem(model_dir)
    if problem:
        raise CorruptWeightsError(f"{problem}; the weights were cut short (a kill or a full disk during the save) "
                                  "or damaged: use another checkpoint or copy/save the model again")
