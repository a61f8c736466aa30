"""Run fingerprints: what produced an output directory, so a resume or reuse with other inputs is refused.

A resumed run that silently mixes two configurations (new settings recorded over old weights, predictions of two
models in one report) is worse than a crash. A fingerprint records the inputs that decide a run's bytes: its
config, its data files (size, mtime and sha256) and the weights it starts from (sha256 of every weight and config
file), plus the code version. :func:`differences` names what changed in one line.

Weights are hashed in full: a checkpoint replaced at the same path with the same size and an mtime kept by
``cp -p`` must still count as changed. sha256 runs at about 1.2 GB/s on one core of an AMD EPYC (family 25,
model 17): some 13 s for a 7B checkpoint's 15 GB, against the hours a run takes. Hashes are memoised per process
by (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

#: Files of a model directory whose bytes decide what the model computes.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CONFIG_NAMES = ("config.json", "adapter_config.json", "generation_config.json", "model.safetensors.index.json",
                 "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                 "preprocessor_config.json", "processor_config.json")
_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, memoised by (resolved path, size, mtime_ns) within the process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _memo[key] = h.hexdigest()
    return _memo[key]


def file_fingerprint(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """Size and sha256 of a data file (None for no file; the path alone when it does not exist)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return {"path": str(path), "exists": False}
    return {"size": p.stat().st_size, "sha256": file_sha256(p)}


def model_fingerprint(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The weights a run reads: for a local directory one sha256 over its weight and config files (by name); for
    a hub id, the id and the cached snapshot's revision when it is on disk (the id alone otherwise)."""
    p = Path(name_or_path)
    if p.is_dir():
        h = hashlib.sha256()
        names = sorted(f.name for f in p.iterdir() if f.is_file()
                       and (f.name.endswith(_WEIGHT_SUFFIXES) or f.name in _CONFIG_NAMES))
        for name in names:
            h.update(f"{name}\0{file_sha256(p / name)}\n".encode())
        return {"sha256": h.hexdigest(), "files": len(names)}
    out: dict[str, Any] = {"hub_id": str(name_or_path)}
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        out["revision"] = Path(snapshot_download(str(name_or_path), local_files_only=True)).name
    except (HFValidationError, LocalEntryNotFoundError, OSError, ValueError):
        out["revision"] = None  # not cached, or not a valid id: the id is all there is to record
    return out


def code_version() -> dict[str, Any]:
    """Package version and, in a git checkout, the commit (recorded, not compared: a fix pulled between a kill
    and its resume should not block the resume)."""
    import emocaliber

    out: dict[str, Any] = {"emocaliber": emocaliber.__version__}
    root = Path(emocaliber.__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=5, check=False)
            if res.returncode == 0:
                out["git"] = res.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}`` so a difference is named by its full key."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def differences(old: dict[str, Any], new: dict[str, Any], *, limit: int = 4) -> list[str]:
    """``key old -> new`` for every differing leaf (sha256 values shortened), at most ``limit`` plus a count."""
    a, b = flatten(old), flatten(new)
    changed = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            changed.append(f"{key} {_short(a.get(key))} -> {_short(b.get(key))}")
    if len(changed) > limit:
        changed = changed[:limit] + [f"{len(changed) - limit} more"]
    return changed


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return repr(value)


def read(path: str | os.PathLike) -> dict[str, Any] | None:
    """A stored fingerprint, or None when the file is absent or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write(path: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
    """Write via a temporary file and rename, so a kill leaves the old fingerprint or the new one, never half."""
    from emocaliber.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
