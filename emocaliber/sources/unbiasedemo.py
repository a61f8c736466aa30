"""UnbiasedEmo (Panda et al. 2018): ``UnBiasedEmo/images/<emotion>/<subcategory>/<file>.jpg``, shipped as a
nested ``images.zip`` inside ``UnBiasedEmo.zip``.

The label is the top folder. The same file name occurs under several sub-folders, so the id is the relative
path, never the base name. Archives are extracted with :func:`safe_extract_zip` (no entry may leave the target).
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from emocaliber.records import Record
from emocaliber.sources.common import SkipLog, Source, find_root, walk_files
from emocaliber.tasks import UNBIASEDEMO_6


class ZipSafetyError(RuntimeError):
    """The archive as a whole cannot be extracted safely (too large, too many entries)."""


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def safe_extract_zip(
    zip_path: Path,
    target: Path,
    skips: SkipLog,
    *,
    group: str,
    max_total_bytes: int = 20 * 1024**3,
    max_entries: int = 1_000_000,
) -> int:
    """Extract ``zip_path`` into ``target``; returns the number of files written.

    Entries that would land outside ``target`` (absolute, ``..``, symlinks) are skipped and counted as
    ``zip_entry_unsafe``. The total size is capped by the bytes actually written (headers can lie), so a zip bomb
    raises :class:`ZipSafetyError` instead of filling the disk.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    written_bytes = written = 0
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise ZipSafetyError(f"{zip_path}: {len(infos)} entries exceed the cap of {max_entries}")
        for info in infos:
            problem = _unsafe_member(info)
            dest = (root / info.filename.replace("\\", "/")).resolve()
            if problem is None and root not in dest.parents and not (info.is_dir() and dest == root):
                problem = "resolves outside the target folder" if dest != root else "names the target folder itself"
            if problem:
                skips.add("zip_entry_unsafe", group, f"{zip_path}:{info.filename}", f"{problem}; not extracted")
                continue
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with zf.open(info) as src, tmp.open("wb") as out:
                while chunk := src.read(1 << 20):
                    written_bytes += len(chunk)
                    if written_bytes > max_total_bytes:
                        out.close()
                        tmp.unlink()
                        raise ZipSafetyError(
                            f"{zip_path}: extracted size exceeds the cap of {max_total_bytes} bytes; "
                            "is this the right archive?"
                        )
                    out.write(chunk)
            os.replace(tmp, dest)
            written += 1
    return written


class UnbiasedEmoSource(Source):
    name = "UnbiasedEmo"
    folder = "UnbiasedEmo"
    split_policy = "test_only"

    def __init__(self, path: str | Path, *, extract_to: str | Path | None = None) -> None:
        """``extract_to``: where archives are unpacked (default: next to the zip, as the authors' instructions)."""
        self.base = find_root(Path(path), "UnBiasedEmo")
        self.extract_to = Path(extract_to) if extract_to else None
        self.root = self.base

    def _extract(self, zip_path: Path, target: Path, skips: SkipLog) -> None:
        """Extract once; a marker with the zip's size and mtime makes a re-run skip the work."""
        st = zip_path.stat()
        marker = target / f".extracted-{zip_path.name}.json"
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if marker.is_file() and json.loads(marker.read_text()) == stamp:
            return
        safe_extract_zip(zip_path, target, skips, group=self.name)
        marker.write_text(json.dumps(stamp))

    def _inner_zip(self, target: Path) -> Path | None:
        candidates = (self.base / "images.zip", target / "images.zip", target / "UnBiasedEmo" / "images.zip")
        return next((p for p in candidates if p.is_file()), None)

    def prepare(self, skips: SkipLog) -> None:
        target = self.extract_to or self.base
        inner = self._inner_zip(target)
        outer = self.base / "UnBiasedEmo.zip"
        if inner is None and outer.is_file():
            self._extract(outer, target, skips)
            inner = self._inner_zip(target)
        if inner is not None:
            self.root = target if inner.parent == self.base else inner.parent
            self._extract(inner, self.root, skips)
        elif (target / "UnBiasedEmo" / "images").is_dir():
            self.root = target / "UnBiasedEmo"
        if not (self.root / "images").is_dir():
            raise FileNotFoundError(
                f"{self.base}: no images/ folder (nor images.zip or UnBiasedEmo.zip providing one); point "
                "--unbiasedemo at the UnBiasedEmo folder"
            )

    def records(self, skips: SkipLog) -> Iterator[Record]:
        self.prepare(skips)
        for rel, path in walk_files(self.root / "images"):
            rel = f"images/{rel}"
            if self.skip_file(skips, rel, path):
                continue
            parts = rel.split("/")
            label = parts[1].lower()
            if len(parts) < 3 or label not in UNBIASEDEMO_6:
                skips.add("unknown_label", self.name, str(path),
                          f"folder {parts[1] if len(parts) > 2 else '(none)'!r} is not one of {list(UNBIASEDEMO_6)}")
                continue
            meta = {"file": parts[-1], "subcategory": "/".join(parts[2:-1]) or None}
            yield self.make_record("UnbiasedEmo-6", rel, label, "test", meta)
