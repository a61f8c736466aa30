"""FI (Flickr & Instagram, You et al. 2016): ``emotion_dataset/<emotion>/<emotion>_<n>.jpg``.

The label is the folder name. One image yields an FI-8 record and an FI-2 record (polarity through
``MIKELS_TO_POLARITY``), which share the image; FI has no official split, so the builder samples its test set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emocaliber.records import Record
from emocaliber.sources.common import SkipLog, Source, find_root, walk_files
from emocaliber.tasks import MIKELS_TO_POLARITY


class FISource(Source):
    name = "FI"
    folder = "FI"
    split_policy = "sample"

    def __init__(self, path: str | Path) -> None:
        self.root = find_root(Path(path), "emotion_dataset")

    def records(self, skips: SkipLog) -> Iterator[Record]:
        for rel, path in walk_files(self.root):
            if self.skip_file(skips, rel, path):
                continue
            parts = rel.split("/")
            label = parts[0].lower()
            if len(parts) < 2 or label not in MIKELS_TO_POLARITY:
                skips.add("unknown_label", self.name, str(path),
                          f"folder {parts[0] if len(parts) > 1 else '(none)'!r} is not one of the 8 emotions "
                          f"{sorted(MIKELS_TO_POLARITY)}; move the file into its emotion folder")
                continue
            meta = {"file": parts[-1]}
            yield self.make_record("FI-8", rel, label, "train", meta)
            yield self.make_record("FI-2", rel, MIKELS_TO_POLARITY[label], "train", dict(meta))
