"""Abstract (Machajdik & Hanbury 2010): ``testImages_abstract/`` with ``ABSTRACT_groundTruth.csv`` vote counts.

The CSV quotes cells with single quotes (``'abstract_0001.jpg',0,1,2,9,...``) and names the columns
``Amusement, Anger, Awe, Content, Disgust, Excitement, Fear, Sad``. The label is the unique majority vote;
ties are dropped, as in VECBench (229 images survive). The votes are kept in ``meta["votes"]``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from emocaliber.records import Record
from emocaliber.sources.common import SkipLog, Source, find_root, relpath_or_skip
from emocaliber.tasks import MIKELS_TO_POLARITY

CSV_NAME = "ABSTRACT_groundTruth.csv"
COLUMN_TO_LABEL = {"content": "contentment", "sad": "sadness"}


class AbstractSource(Source):
    name = "Abstract"
    folder = "Abstract"
    split_policy = "test_only"
    test_all = True

    def __init__(self, path: str | Path) -> None:
        self.root = find_root(Path(path), "testImages_abstract")
        self.csv_path = self.root / CSV_NAME
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"{self.csv_path} not found; point --abstract at testImages_abstract/")

    def _labels(self, header: list[str]) -> list[str]:
        labels = [COLUMN_TO_LABEL.get(c.lower(), c.lower()) for c in header[1:]]
        unknown = [c for c, lab in zip(header[1:], labels) if lab not in MIKELS_TO_POLARITY]
        if unknown or len(set(labels)) != len(labels):
            raise ValueError(
                f"{self.csv_path}:1: header columns {header[1:]} must name the 8 emotions once each "
                f"(Amusement, Anger, Awe, Content, Disgust, Excitement, Fear, Sad); unknown: {unknown}"
            )
        return labels

    def records(self, skips: SkipLog) -> Iterator[Record]:
        with self.csv_path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            labels: list[str] | None = None
            for row in reader:
                cells = [c.strip().strip("'").strip() for c in row]
                where = f"{self.csv_path}:{reader.line_num}"
                if not any(cells):
                    continue
                if labels is None:
                    labels = self._labels(cells)
                    continue
                if len(cells) != len(labels) + 1:
                    skips.add("malformed_line", self.name, where,
                              f"expected a file name and {len(labels)} vote counts, got {len(cells)} cells")
                    continue
                try:
                    votes = [int(c) for c in cells[1:]]
                    if min(votes) < 0:
                        raise ValueError
                except ValueError:
                    skips.add("malformed_line", self.name, where, f"vote counts must be integers >= 0: {cells[1:]}")
                    continue
                rel = relpath_or_skip(cells[0], skips, self.name, where)
                if rel is None:
                    continue
                top = max(votes)
                if votes.count(top) > 1:
                    skips.add("tie", "Abstract-8", where, f"{rel}: {votes.count(top)} emotions share {top} votes")
                    continue
                meta = {"file": rel.rsplit("/", 1)[-1], "votes": dict(zip(labels, votes))}
                yield self.make_record("Abstract-8", rel, labels[votes.index(top)], "test", meta)
