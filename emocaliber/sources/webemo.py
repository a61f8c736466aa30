"""WEBEmo (Panda et al. 2018): ``category.txt``, ``train25.txt``, ``test25.txt``; the images are URLs only.

Each index line is ``<url> <level-3 index 0-24>``. Images live in a local cache keyed by the URL's base name
(:func:`url_cache_name`; fill it with ``data_prep/download_webemo.py``). One line yields three records, WebEmo-25,
WebEmo-7 and WebEmo-2, through the hierarchy maps in :mod:`emocaliber.tasks`; ``category.txt`` (Python tuples,
read with ``ast.literal_eval``) gives the index order and is cross-checked against those maps.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from emocaliber.records import Record
from emocaliber.sources.common import SkipLog, Source, find_root, log
from emocaliber.tasks import WEBEMO_7_TO_2, WEBEMO_25, WEBEMO_25_TO_7

INDEX_FILES = (("test25.txt", "test"), ("train25.txt", "train"))
POLARITY_SIGN = {"+": "positive", "-": "negative"}


def url_cache_name(url: str) -> str | None:
    """The cache file name of an image URL (its path's base name), or None when the URL names no file.

    String operations rather than ``urlsplit``: this runs once per index line (267k of them).
    """
    rest = url.split("#", 1)[0].split("?", 1)[0]
    rest = rest.split("://", 1)[1] if "://" in rest else rest
    path = rest[rest.find("/"):] if "/" in rest else ""
    name = path.rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..") and "\\" not in name else None


def iter_index(path: Path, skips: SkipLog, *, n_labels: int = 25, group: str = "WebEmo"
               ) -> Iterator[tuple[str, str, int]]:
    """``(where, url, label index)`` per valid line of ``train25.txt`` / ``test25.txt``; bad lines are counted."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit() or not 0 <= int(parts[1]) < n_labels:
                skips.add("malformed_line", group, where,
                          f"expected '<url> <label 0-{n_labels - 1}>', got {line.strip()[:120]!r}")
                continue
            yield where, parts[0].strip(), int(parts[1])


class WebEmoSource(Source):
    name = "WebEmo"
    folder = "WebEmo"
    split_policy = "official"

    def __init__(self, path: str | Path, *, cache_dir: str | Path | None = None) -> None:
        """``cache_dir``: the downloaded images, named by URL base name (default ``<path>/images``)."""
        self.index_root = find_root(Path(path), "WEBEmo")
        if not any((self.index_root / f).is_file() for f, _ in INDEX_FILES):
            raise FileNotFoundError(f"{self.index_root}: train25.txt/test25.txt not found; point --webemo at WEBEmo/")
        self.root = Path(cache_dir) if cache_dir else self.index_root / "images"

    def level3_labels(self, skips: SkipLog) -> list[str | None]:
        """Level-3 label per index from ``category.txt`` (None where the file's word is unknown)."""
        path = self.index_root / "category.txt"
        if not path.is_file():
            log.info("%s not found; using the documented WebEmo index order", path)
            return list(WEBEMO_25)
        labels: list[str | None] = []
        with path.open(encoding="utf-8") as fh:  # not splitlines(): it also splits on U+2028, shifting indices
            lines = list(fh)
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                tup = ast.literal_eval(line.strip())
                if not (isinstance(tup, tuple) and len(tup) == 3 and all(isinstance(x, str) for x in tup)):
                    raise ValueError("not a 3-tuple of strings")
            except (ValueError, SyntaxError) as e:
                skips.add("malformed_line", self.name, where, f"expected ('level3', 'level2', '+/-'): {e}")
                labels.append(None)
                continue
            fine, mid, sign = tup
            if fine not in WEBEMO_25_TO_7:
                skips.add("unknown_label", self.name, where, f"{fine!r} is not a WebEmo-25 label; its lines are skipped")
                labels.append(None)
                continue
            expected = (WEBEMO_25_TO_7[fine], WEBEMO_7_TO_2[WEBEMO_25_TO_7[fine]])
            if (mid, POLARITY_SIGN.get(sign.strip().replace("\u2212", "-"))) != expected:
                log.warning("%s: %s disagrees with the hierarchy in emocaliber.tasks %s; the registry's map is used",
                            where, tup, expected)
            labels.append(fine)
        return labels

    def records(self, skips: SkipLog) -> Iterator[Record]:
        level3 = self.level3_labels(skips)
        for fname, split in INDEX_FILES:
            path = self.index_root / fname
            if not path.is_file():
                log.warning("%s not found; WebEmo %s lines skipped", path, split)
                continue
            for where, url, index in iter_index(path, skips, n_labels=len(level3), group=self.name):
                fine = level3[index]
                if fine is None:
                    skips.add("unknown_label", self.name, where, f"label index {index} has no valid category")
                    continue
                rel = url_cache_name(url)  # a bare file name: cannot leave the cache folder
                if rel is None:
                    skips.add("malformed_line", self.name, where, f"URL {url!r} names no file")
                    continue
                meta = {"url": url, "source_split": split, "label_index": index}
                mid = WEBEMO_25_TO_7[fine]
                yield self.make_record("WebEmo-25", rel, fine, split, meta)
                yield self.make_record("WebEmo-7", rel, mid, split, dict(meta))
                yield self.make_record("WebEmo-2", rel, WEBEMO_7_TO_2[mid], split, dict(meta))
