"""ArtPhoto (Machajdik & Hanbury 2010): a flat ``testImages_artphoto/<prefix>_<id>.jpg`` folder.

The label is the file-name prefix before the first ``_``, with ``sad`` meaning ``sadness``; ``ReadMe.rtf`` and
``.DS_Store`` sit in the same folder and are skipped. All 806 images are OOD test items.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emocaliber.records import Record
from emocaliber.sources.common import SkipLog, Source, find_root, walk_files
from emocaliber.tasks import MIKELS_TO_POLARITY

PREFIX_TO_LABEL = {**{label: label for label in MIKELS_TO_POLARITY}, "sad": "sadness"}


class ArtPhotoSource(Source):
    name = "ArtPhoto"
    folder = "ArtPhoto"
    split_policy = "test_only"
    test_all = True

    def __init__(self, path: str | Path) -> None:
        self.root = find_root(Path(path), "testImages_artphoto")

    def records(self, skips: SkipLog) -> Iterator[Record]:
        for rel, path in walk_files(self.root):
            if self.skip_file(skips, rel, path):
                continue
            name = rel.rsplit("/", 1)[-1]
            prefix = name.split("_", 1)[0].lower() if "_" in name else None
            label = PREFIX_TO_LABEL.get(prefix) if prefix else None
            if label is None:
                skips.add("unknown_label", self.name, str(path),
                          f"file-name prefix {prefix!r} is not one of {sorted(PREFIX_TO_LABEL)} "
                          "(names look like 'sad_123.jpg')")
                continue
            yield self.make_record("Artphoto-8", rel, label, "test", {"file": name})
