"""EmoSet-118K (Yang et al. 2023): ``image/<emo>/<emo>_NNNNN.jpg``, ``annotation/<emo>/<emo>_NNNNN.json`` and
the split files ``train.json`` / ``val.json`` / ``test.json``.

Split entries come in two documented shapes, so they are parsed by length: the official README's
``[emotion, image_id, image_path, annotation_path]`` and the released files' ``[emotion, image_path,
annotation_path]``. Any other shape is counted as ``emoset_entry_shape``. The per-image annotation attributes
(brightness, scene, object, ...) are kept in ``meta["attributes"]``. ``test.json`` is read first so an image
listed in both a test and a train file is kept only as a test candidate (the duplicate is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from emocaliber.records import Record
from emocaliber.sources.common import SkipLog, Source, find_root, log, relpath_or_skip
from emocaliber.tasks import MIKELS_TO_POLARITY

SPLIT_FILES = (("test.json", "test"), ("val.json", "val"), ("train.json", "train"))


def _short(obj: object, limit: int = 120) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def iter_json_array(path: Path, skips: SkipLog, *, group: str, chunk_chars: int = 1 << 16
                    ) -> Iterator[tuple[str, object]]:
    """Yield ``(where, element)`` for each element of a top-level JSON array, reading the file in chunks.

    EmoSet's ``train.json`` holds ~94k entries; streaming keeps memory flat. A malformed element is counted
    as ``malformed_line`` (with entry number and line) and skipped up to the next ``]``, which is exact for
    EmoSet's flat entries; the rest of the file is still read.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as fh:
        buf, pos, line, eof = "", 0, 1, False

        def fill(need: int) -> None:
            nonlocal buf, pos, eof
            while not eof and len(buf) - pos < need:
                chunk = fh.read(chunk_chars)
                eof = not chunk
                buf = buf[pos:] + chunk
                pos = 0

        def skip_ws() -> None:
            nonlocal pos, line
            while True:
                fill(1)
                start = pos
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                line += buf.count("\n", start, pos)
                if pos < len(buf) or eof:
                    return

        skip_ws()
        if buf[pos:pos + 1] != "[":
            raise ValueError(f"{path}:{line}: expected a JSON array ('[' ...), the EmoSet split-file format")
        pos += 1
        index = 0
        while True:
            skip_ws()
            if pos >= len(buf):
                skips.add("malformed_line", group, f"{path}:{line}", "file ends before the closing ']'")
                return
            if buf[pos] == "]":
                return
            where = f"{path}:{line} (entry {index})"
            fill(1 << 14)  # look-ahead: an entry longer than this is reported as malformed
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                skips.add("malformed_line", group, where, f"not valid JSON ({e.msg})")
                while (close := buf.find("]", pos)) < 0 and not eof:
                    fill(len(buf) - pos + chunk_chars)
                end = len(buf) if close < 0 else close + 1
                obj = None
            line += buf.count("\n", pos, end)
            pos = end
            if obj is not None:
                yield where, obj
            index += 1
            skip_ws()
            if buf[pos:pos + 1] == ",":
                pos += 1
            elif buf[pos:pos + 1] != "]":
                skips.add("malformed_line", group, f"{path}:{line} (after entry {index - 1})",
                          "expected ',' or ']' between entries")
                if pos >= len(buf):
                    return


class EmoSetSource(Source):
    name = "EmoSet"
    folder = "EmoSet-118K"
    split_policy = "official"

    def __init__(self, path: str | Path) -> None:
        self.root = find_root(Path(path), "EmoSet-118K")
        if not any((self.root / f).is_file() for f, _ in SPLIT_FILES):
            raise FileNotFoundError(f"{self.root}: none of train.json/val.json/test.json found; point --emoset at "
                                    "the unpacked EmoSet-118K folder")

    def _attributes(self, ann_rel: str, skips: SkipLog, where: str) -> dict | None:
        try:
            ann = json.loads((self.root / ann_rel).read_text(encoding="utf-8"))
            if not isinstance(ann, dict):
                raise TypeError("not a JSON object")
        except (OSError, ValueError, TypeError) as e:
            skips.add("annotation_missing", "EmoSet-8", where, f"{ann_rel}: {e}")
            return None
        return {k: v for k, v in sorted(ann.items()) if k != "emotion"}

    def _parse_entry(self, entry: object, skips: SkipLog, where: str) -> tuple[str, str, str, str | None] | None:
        if isinstance(entry, list) and all(isinstance(x, str) for x in entry):
            if len(entry) == 3:
                return entry[0], entry[1], entry[2], None
            if len(entry) == 4:
                return entry[0], entry[2], entry[3], entry[1]
        skips.add("emoset_entry_shape", self.name, where,
                  f"got {_short(entry)}; expected [emotion, image, annotation] or [emotion, id, image, annotation]")
        return None

    def records(self, skips: SkipLog) -> Iterator[Record]:
        for fname, source_split in SPLIT_FILES:
            path = self.root / fname
            if not path.is_file():
                log.warning("%s not found; EmoSet %s entries skipped", path, source_split)
                continue
            for where, entry in iter_json_array(path, skips, group=self.name):
                parsed = self._parse_entry(entry, skips, where)
                if parsed is None:
                    continue
                label, image, annotation, image_id = parsed
                if label not in MIKELS_TO_POLARITY:
                    skips.add("unknown_label", self.name, where,
                              f"emotion {label!r} is not one of {sorted(MIKELS_TO_POLARITY)}")
                    continue
                rel = relpath_or_skip(image, skips, self.name, where)
                ann_rel = relpath_or_skip(annotation, skips, self.name, where) if rel else None
                if rel is None or ann_rel is None:
                    continue
                meta: dict = {"file": rel.rsplit("/", 1)[-1], "source_split": source_split}
                if image_id is not None:
                    meta["image_id"] = image_id
                attributes = self._attributes(ann_rel, skips, where)
                if attributes is not None:
                    meta["attributes"] = attributes
                yield self.make_record("EmoSet-8", rel, label, "test" if source_split == "test" else "train", meta)
