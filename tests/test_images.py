"""One image loader with one set of checks: training data, corpora and evaluation requests, exports and the
Python API refuse the same files for the same reasons."""

from __future__ import annotations

import pytest
from PIL import Image

from emocaliber.formats import to_trl_messages
from emocaliber.generation import record_request
from emocaliber.images import ImageLoadError, load_record_image, open_image
from emocaliber.inference import InputError, load_image
from emocaliber.records import Record, write_jsonl
from emocaliber.tasks import MIKELS_8
from emocaliber.train.data import DataError, load_split


def _record(name: str) -> Record:
    return Record(id=name, task="EmoSet-8", image=f"{name}.png", candidates=list(MIKELS_8), ground_truth="awe",
                  split="train", source="test")


@pytest.fixture
def files(tmp_path):
    Image.new("RGB", (600, 2)).save(tmp_path / "thin.png")  # Qwen2.5-VL refuses 200:1 and wider
    Image.new("RGB", (64, 48), "red").save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # a truncated download
    return tmp_path


@pytest.mark.parametrize("name, reason", [("thin", "aspect ratio 300:1"), ("cut", "could not be decoded"),
                                          ("absent", "image not found")])
def test_every_reader_refuses_the_same_files(files, name, reason):
    record = _record(name)
    for load in (lambda: open_image(files / f"{name}.png"), lambda: load_record_image(record, files),
                 lambda: record_request(record, image_root=files),
                 lambda: to_trl_messages(record, with_confidence=False, image_root=files)):
        with pytest.raises(ImageLoadError, match=reason):
            load()
    with pytest.raises(InputError, match=reason):
        load_image(files / f"{name}.png")
    if name != "absent":  # a missing file is found missing before the image check
        write_jsonl(files / "train.jsonl", [_record("good"), record])
        with pytest.raises(DataError, match=reason):
            load_split(files / "train.jsonl", image_root=files, verify_images=True)


def test_a_good_file_loads_the_same_everywhere(files):
    record = _record("good")
    images = [open_image(files / "good.png"), load_record_image(record, files), load_image(files / "good.png"),
              record_request(record, image_root=files).images[0],
              to_trl_messages(record, with_confidence=False, image_root=files)["images"][0]]
    assert all(im.mode == "RGB" and im.tobytes() == images[0].tobytes() for im in images)
    write_jsonl(files / "train.jsonl", [record])
    assert len(load_split(files / "train.jsonl", image_root=files, verify_images=True).records) == 1
