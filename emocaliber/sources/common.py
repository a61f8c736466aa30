"""Shared pieces of the source readers: skip accounting, image checks, file walking, the reader interface.

Raw emotion datasets are hand-made trees and URL lists with link rot, so every reader meets bad items. The rule
is the same everywhere: one bad item is named (file, line, what to fix), counted under a reason in a
:class:`SkipLog`, and skipped; nothing else is lost. Reasons have a kind: ``error`` (bad input, which ``--strict``
turns into a failure), ``policy`` (an expected drop such as an Abstract vote tie or a ``ReadMe.rtf``) and
``warning`` (the item is kept, with less information).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from emocaliber.records import Record, RecordError, safe_relpath
from emocaliber.tasks import get_task

log = logging.getLogger("emocaliber.sources")

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Largest image file accepted (bytes); a bigger "image" is almost always a wrong file.
MAX_IMAGE_BYTES = 50 * 1024 * 1024

#: reason -> (kind, what it means / what to do).
REASONS: dict[str, tuple[str, str]] = {
    "missing_image": ("error", "image file not found (not downloaded, moved, or a wrong path in the index)"),
    "zero_byte_image": ("error", "image file is empty (a failed download or copy); re-fetch it"),
    "html_not_image": ("error", "file is an HTML/XML page saved under an image name (a dead link); re-fetch it"),
    "corrupt_image": ("error", "image does not decode (corrupt or truncated); re-fetch or delete it"),
    "image_too_large": ("error", f"file is larger than {MAX_IMAGE_BYTES} bytes; not an ordinary image"),
    "path_escapes_root": ("error", ("path is absolute, leaves the dataset root with '..' or is a link out of it; "
                                    "fix the index entry or copy the file in")),
    "zip_entry_unsafe": ("error", "zip entry is absolute, contains '..' or is a symlink; it was not extracted"),
    "malformed_line": ("error", "a line/entry of an index file could not be parsed; fix or delete that line"),
    "unknown_label": ("error", "label word (folder, prefix, column or index) is not in the task's label set"),
    "unknown_task": ("error", "task name is not registered in emocaliber.tasks"),
    "emoset_entry_shape": ("error", ("EmoSet split entry is neither [label, image, annotation] nor "
                                    "[label, id, image, annotation]")),
    "invalid_record": ("error", "the fields do not make a valid record (see the message)"),
    "link_failed": ("error", "could not place the image under the output image root"),
    "tie": ("policy", "Abstract vote tie: no unique majority label, dropped as in VECBench"),
    "non_image_file": ("policy", "not an image file by extension (e.g. ReadMe.rtf)"),
    "linked_file": ("policy", ("symbolic link to a file inside the dataset root; the file is read once, at its own "
                               "path")),
    "linked_folder": ("policy", ("symbolic link to a folder inside the dataset root; its images are read at "
                                 "their own paths")),
    "hidden_file": ("policy", "hidden or system file (.DS_Store, __MACOSX)"),
    "duplicate": ("policy", "same image already kept for this task (same path, or same bytes when verifying)"),
    "annotation_missing": ("warning", "EmoSet annotation JSON missing or unreadable; kept without attributes"),
}


def reason_kind(reason: str) -> str:
    return REASONS[reason][0]


class SkipLog:
    """Counts of skipped items by reason and group (task or source), with the first few messages of each.

    Memory stays bounded whatever the number of bad items: only counters and ``max_examples`` messages per
    reason are kept. The first ``max_examples`` messages of each reason are also logged as warnings.
    """

    def __init__(self, max_examples: int = 20) -> None:
        self.max_examples = max_examples
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, reason: str, group: str, where: str, message: str = "") -> None:
        """Count one skipped (or, for warnings, degraded) item; ``where`` names the file/line or path."""
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.counts[reason][group] += 1
        examples = self.examples[reason]
        if len(examples) < self.max_examples:
            text = f"{where}: {message or REASONS[reason][1]}"
            examples.append(text)
            log.warning("%s [%s] %s", group, reason, text)

    def total(self, kind: str | None = None) -> int:
        return sum(sum(c.values()) for r, c in self.counts.items() if kind is None or reason_kind(r) == kind)

    @property
    def n_errors(self) -> int:
        return self.total("error")

    def to_dict(self) -> dict:
        return {
            reason: {"kind": reason_kind(reason), "total": sum(c.values()), "by_group": dict(sorted(c.items())),
                     "examples": list(self.examples[reason])}
            for reason, c in sorted(self.counts.items())
        }


# --- images --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of :func:`check_image`; ``digest`` (of the file bytes) only when the bytes were read."""

    reason: str | None
    detail: str = ""
    digest: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _looks_like_markup(head: bytes) -> bool:
    """No image format starts with '<'; HTML error pages and XML do (after an optional BOM/whitespace)."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"


def check_bytes(data: bytes) -> ImageCheck:
    """Decode-check image bytes: not empty, not an HTML page, PIL verify and a full (reduced-scale) decode."""
    if not data:
        return ImageCheck("zero_byte_image")
    if len(data) > MAX_IMAGE_BYTES:
        return ImageCheck("image_too_large", f"{len(data)} bytes")
    if _looks_like_markup(data[:512]):
        return ImageCheck("html_not_image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # structure and checksums (PNG CRCs)
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads every byte
            im.load()  # catches truncation, which verify() misses for JPEG
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return ImageCheck("corrupt_image", f"{type(e).__name__}: {e}")
    return ImageCheck(None, digest=hashlib.blake2b(data, digest_size=16).digest())


def check_image(path: Path, *, verify: bool, root: Path | None = None) -> ImageCheck:
    """Check an image file. ``verify=False`` only stats it (exists, regular file, non-empty, not huge);
    ``verify=True`` also decodes it and returns a content digest for de-duplication. With ``root``, a path that
    symbolic links lead out of ``root`` is refused: the dataset's files may not read what lies outside it."""
    if root is not None:
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a loop of links
            return ImageCheck("missing_image", f"{path} does not exist or its links do not resolve")
        if not real.is_relative_to(root.resolve()):
            return ImageCheck("path_escapes_root", f"{path} is a link to {real}, outside {root}")
    try:
        st = path.stat()
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return ImageCheck("missing_image", f"{path} does not exist")
    if not stat.S_ISREG(st.st_mode):
        return ImageCheck("missing_image", f"{path} is not a regular file")
    if st.st_size == 0:
        return ImageCheck("zero_byte_image", f"{path} is empty")
    if st.st_size > MAX_IMAGE_BYTES:
        return ImageCheck("image_too_large", f"{path} has {st.st_size} bytes")
    if not verify:
        return ImageCheck(None)
    result = check_bytes(path.read_bytes())
    return result if result.ok else ImageCheck(result.reason, f"{path}: {result.detail or REASONS[result.reason][1]}")


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX" or name.lower() in ("thumbs.db", "desktop.ini")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file under ``root``, depth-first in sorted order (deterministic).

    Hidden folders (``.git``, ``__MACOSX``) are not entered; hidden files are yielded so callers can count them.
    Linked folders are not entered either (a link to ``..`` would loop) but yielded, so that their check counts
    them.
    """
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        entries = sorted(os.scandir(os.path.join(root, rel_dir)), key=lambda e: e.name)
        prefix = rel_dir + "/" if rel_dir else ""
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                yield prefix + entry.name, Path(entry.path)
        stack.extend(prefix + e.name for e in reversed(entries)
                     if e.is_dir(follow_symlinks=False) and not is_hidden(e.name))


def find_root(path: Path, *markers: str) -> Path:
    """``path`` itself, or its one sub-folder (named in ``markers``) that holds the data.

    Users point at either the folder they downloaded or the folder inside it; accept both.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {path}")
    for marker in markers:
        if (path / marker).is_dir():
            return path / marker
    return path


# --- the reader interface ------------------------------------------------------------------------------------


class Source:
    """A raw dataset on disk that yields VECBench records.

    ``root`` is the folder the originals' relative paths start from; a record's ``image`` is
    ``<folder>/<relative path>`` under the output image root and its ``id`` is ``<task>/<relative path>``.
    ``split_policy`` tells the builder how to split: ``official`` (the dataset's own train/test files; records
    carry ``meta["source_split"]``), ``sample`` (no split: the test set is drawn from all items) or ``test_only``
    (OOD: never trained on). ``test_all`` puts every item in the test set (Abstract, ArtPhoto).
    """

    name: str = ""
    folder: str = ""
    split_policy: str = "sample"
    test_all: bool = False
    root: Path

    def prepare(self, skips: SkipLog) -> None:
        """Make the originals readable (e.g. extract archives); idempotent. Called by :meth:`records`."""

    def records(self, skips: SkipLog) -> Iterator[Record]:
        raise NotImplementedError

    def original_path(self, record: Record) -> Path:
        """Where a record's image is in the raw dataset."""
        prefix = self.folder + "/"
        if not record.image.startswith(prefix):
            raise ValueError(f"record {record.id!r}: image {record.image!r} is not under {prefix!r}")
        return self.root / record.image[len(prefix):]

    def make_record(self, task: str, rel: str, label: str, split: str, meta: dict) -> Record:
        spec = get_task(task)
        return Record(id=f"{spec.name}/{rel}", task=spec.name, image=f"{self.folder}/{rel}",
                      candidates=list(spec.labels), ground_truth=label, split=split, source=self.name, meta=meta)

    def skip_file(self, skips: SkipLog, rel: str, path: Path) -> bool:
        """Count and skip hidden and non-image files of a folder walk, and symbolic links; True if skipped.

        A link is resolved: one leaving the dataset root is refused, one inside it is counted and skipped because
        its target is read at its own path (keeping the link instead made the real file its "duplicate", and a
        link in the output escapes the output root)."""
        if path.is_symlink():
            return self._skip_link(skips, path)
        if any(is_hidden(part) for part in rel.split("/")):
            skips.add("hidden_file", self.name, str(path))
            return True
        if not is_image_name(rel):
            skips.add("non_image_file", self.name, str(path),
                      f"extension not one of {sorted(IMAGE_EXTS)}; skipped")
            return True
        return False

    def _skip_link(self, skips: SkipLog, path: Path) -> bool:
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop of links
            skips.add("missing_image", self.name, str(path), f"{path} is a link that does not resolve")
            return True
        if not real.is_relative_to(self.root.resolve()):
            skips.add("path_escapes_root", self.name, str(path), f"{path} is a link to {real}, outside {self.root}")
            return True
        skips.add("linked_folder" if real.is_dir() else "linked_file", self.name, str(path), f"link to {real}")
        return True


def relpath_or_skip(path: str, skips: SkipLog, group: str, where: str) -> str | None:
    """A data-supplied relative path, normalised; ``None`` (counted) if it is absolute or escapes the root."""
    try:
        return safe_relpath(path)
    except RecordError as e:
        skips.add("path_escapes_root", group, where, str(e))
        return None
