"""Miniature raw trees in the six source datasets' on-disk layouts, built with tiny PIL images.

Each image gets its own colour (from its path) so content de-duplication sees distinct files unless a test makes
a copy on purpose. Builders return the folder to pass to the reader and take the file lists as arguments, so a
test states its expected records from the same literal lists it built the tree from.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from PIL import Image

#: category.txt as WEBEmo ships it, (level-3, level-2, polarity) tuples typed by hand (not from tasks.py);
#: labels and misspellings as in cvlab-stonybrook/EmotionNet_CVPR2020 Datasets/WebEmo/constants.py.
WEBEMO_CATEGORY_LINES = [
    "('affection', 'love', '+')", "('cheerfullness', 'joy', '+')", "('confusion', 'confusion', '-')",
    "('contentment', 'joy', '+')", "('disappointment', 'sadness', '-')", "('disgust', 'anger', '-')",
    "('enthrallment', 'joy', '+')", "('envy', 'anger', '-')", "('exasperation', 'anger', '-')",
    "('gratitude', 'love', '+')", "('horror', 'fear', '-')", "('irritabilty', 'anger', '-')",
    "('lust', 'love', '+')", "('neglect', 'sadness', '-')", "('nervousness', 'fear', '-')",
    "('optimism', 'joy', '+')", "('pride', 'joy', '+')", "('rage', 'anger', '-')", "('relief', 'joy', '+')",
    "('sadness', 'sadness', '-')", "('shame', 'sadness', '-')", "('suffering', 'sadness', '-')",
    "('surprise', 'surprise', '+')", "('sympathy', 'sadness', '-')", "('zest', 'joy', '+')",
]
ABSTRACT_HEADER = "'','Amusement','Anger','Awe','Content','Disgust','Excitement','Fear','Sad'"


def image_bytes(key: str, size: int = 8, fmt: str = "JPEG") -> bytes:
    """A tiny image whose colour is derived from ``key``."""
    rgb = tuple(hashlib.blake2b(key.encode(), digest_size=3).digest())
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, key: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(key or path.as_posix()))
    return path


def make_fi(root: Path, files: dict[str, list[str]]) -> Path:
    """``<root>/FI/emotion_dataset/<folder>/<name>``; returns the FI folder."""
    base = root / "FI"
    for folder, names in files.items():
        for name in names:
            write_image(base / "emotion_dataset" / folder / name)
    return base


def make_emoset(root: Path, splits: dict[str, list], *, annotations: dict[str, dict] | None = None,
                images: list[str] | None = None) -> Path:
    """``<root>/EmoSet-118K`` with ``<split>.json`` holding ``splits[split]`` verbatim (entries of any shape).

    Images named in 3- or 4-item entries are created unless ``images`` lists exactly which to create;
    ``annotations`` maps an annotation path to its JSON content.
    """
    base = root / "EmoSet-118K"
    base.mkdir(parents=True)
    info = {"emotion": {"label2idx": {"amusement": 0}, "idx2label": {"0": "amusement"}}}
    (base / "info.json").write_text(json.dumps(info))
    wanted = set(images) if images is not None else {
        e[-2] for entries in splits.values() for e in entries if isinstance(e, list) and len(e) in (3, 4)}
    for split, entries in splits.items():
        (base / f"{split}.json").write_text(json.dumps(entries))
    for rel in sorted(wanted):
        if "\0" not in rel:  # a NUL cannot be in a file name: such an entry is only in the index
            write_image(base / rel)
    for rel, content in (annotations or {}).items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(json.dumps(content))
    return base


def make_webemo(root: Path, train: list[str], test: list[str], *, cached: list[str] | None = None,
                category_lines: list[str] | None = None) -> Path:
    """``<root>/WEBEmo`` with the index lines given and the images of ``cached`` (base names) in ``images/``."""
    base = root / "WEBEmo"
    base.mkdir(parents=True)
    (base / "category.txt").write_text("\n".join(category_lines or WEBEMO_CATEGORY_LINES) + "\n")
    (base / "train25.txt").write_text("".join(line + "\n" for line in train))
    (base / "test25.txt").write_text("".join(line + "\n" for line in test))
    for name in cached or []:
        write_image(base / "images" / name)
    return base


def make_abstract(root: Path, rows: list[str], images: list[str]) -> Path:
    """``<root>/testImages_abstract`` with the CSV (header + ``rows`` verbatim) and the listed images."""
    base = root / "testImages_abstract"
    base.mkdir(parents=True)
    (base / "ABSTRACT_groundTruth.csv").write_text(ABSTRACT_HEADER + "\n" + "\n".join(rows) + "\n")
    for name in images:
        write_image(base / name)
    return base


def make_artphoto(root: Path, images: list[str], other_files: dict[str, bytes] | None = None) -> Path:
    base = root / "testImages_artphoto"
    base.mkdir(parents=True)
    for name in images:
        write_image(base / name)
    for name, data in (other_files or {}).items():
        (base / name).write_bytes(data)
    return base


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_unbiasedemo(root: Path, images: list[str], *, nested: bool = True) -> Path:
    """``<root>/UnBiasedEmo`` holding ``images.zip`` (paths like ``images/joy/dog/1.jpg``); with ``nested`` the
    whole folder is itself zipped as ``UnBiasedEmo.zip``, as distributed. Returns the folder to point at."""
    inner = zip_bytes({rel: image_bytes(rel) for rel in images})
    base = root / "UnBiasedEmo"
    base.mkdir(parents=True)
    if nested:
        (base / "UnBiasedEmo.zip").write_bytes(zip_bytes({"UnBiasedEmo/images.zip": inner}))
    else:
        (base / "images.zip").write_bytes(inner)
    return base


def make_all(root: Path) -> dict[str, Path]:
    """One small tree per dataset, the layout of every source at once (used by the build tests)."""
    return {
        "fi": make_fi(root, {"amusement": ["amusement_1.jpg", "amusement_2.jpg"], "fear": ["fear_10.jpg"],
                             "sadness": ["sadness_3.jpg"]}),
        "emoset": make_emoset(root, {
            "test": [["awe", "image/awe/awe_00001.jpg", "annotation/awe/awe_00001.json"],
                     ["fear", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"]],
            "val": [["anger", "image/anger/anger_00003.jpg", "annotation/anger/anger_00003.json"]],
            "train": [["amusement", "amusement_00004", "image/amusement/amusement_00004.jpg",
                       "annotation/amusement/amusement_00004.json"],
                      ["sadness", "image/sadness/sadness_00005.jpg", "annotation/sadness/sadness_00005.json"]],
        }, annotations={"annotation/awe/awe_00001.json": {"emotion": "awe", "scene": "mountain",
                                                           "object": ["Tree", "Sky"], "brightness": 0.6}}),
        "webemo": make_webemo(root, train=["https://x.test/a/1_F_1.jpg 1", "https://x.test/a/2_F_2.jpg 11"],
                              test=["https://x.test/b/3_F_3.jpg 22"],
                              cached=["1_F_1.jpg", "2_F_2.jpg", "3_F_3.jpg"]),
        "abstract": make_abstract(root, ["'abstract_0001.jpg',0,1,2,9,0,1,0,1", "'abstract_0002.jpg',3,0,0,3,0,0,0,0",
                                         "'abstract_0003.jpg', 0, 0, 0, 0, 0, 0, 1, 7"],
                                  ["abstract_0001.jpg", "abstract_0002.jpg", "abstract_0003.jpg"]),
        "artphoto": make_artphoto(root, ["amusement_11.jpg", "sad_4.jpg"], {"ReadMe.rtf": b"{\\rtf1 readme}"}),
        "unbiasedemo": make_unbiasedemo(root, ["images/joy/dog/1.jpg", "images/sadness/dog/1.jpg",
                                               "images/love/baby/2.jpg"]),
    }
