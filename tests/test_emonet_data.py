"""Streamed readers of the release's hq.csv and binary.csv, on miniature files in the exact layout."""

import csv
import tracemalloc

import numpy as np
import pytest
from emonet_fixtures import human_ratings, latent, write_binary, write_hq

from emocaliber.emonet.data import BadRows, EmoNetDataError, iter_hq, load_binary, load_hq
from emocaliber.emonet.taxonomy import INDEX, NAMES


@pytest.fixture
def hq(tmp_path):
    lat = latent(12)
    ratings = human_ratings(lat)
    return write_hq(tmp_path / "hq.csv", ratings, models={"Hume Face*": lat / 7}), ratings, lat


def test_ratings_come_back_per_annotator_image_and_emotion(hq):
    path, ratings, lat = hq
    data = load_hq(path)
    assert data.annotators[:1] and data.bad.total == 0
    for r in range(8):
        a = data.annotators.index(f"human-{r + 1}")
        assert data.human[a]
        np.testing.assert_array_equal(data.ratings[a], ratings[r])  # NaN where the rater did not rate
    hume = data.annotators.index("Hume Face*")
    assert not data.human[hume]
    np.testing.assert_allclose(data.ratings[hume], lat, atol=1e-9)  # x 7, as the release notebook does


def test_missing_keys_are_zero_and_extra_dimensions_ignored(tmp_path):
    ratings = human_ratings(latent(6))
    full = load_hq(write_hq(tmp_path / "a.csv", ratings))
    sparse = load_hq(write_hq(tmp_path / "b.csv", ratings, drop_zero_keys=True))
    np.testing.assert_array_equal(full.ratings, sparse.ratings)
    assert full.ratings.shape[2] == 40


def test_bad_rows_are_counted_with_file_and_line_and_skipped(tmp_path):
    path = tmp_path / "hq.csv"
    good = repr({"Positive High-Energy Emotions|Elation": 3})
    multi = "{'Positive High-Energy Emotions|Elation': 1,\n 'Negative High-Energy Emotions|Anger': 2}"
    rows = [["img1", "human-1", "True", good],                      # line 2
            ["img1", "human-2", "True", multi],                     # lines 3-4 (quoted newline)
            ["img2", "human-1", "True", "{'Nope|Elation2': 3}"],    # line 5: unknown emotion
            ["img2", "human-2", "maybe", good],                     # line 6: bad flag
            ["img3", "human-1", "True", "{'Positive High-Energy Emotions|Elation': 'x'}"],  # 7: not a number
            ["img3", "human-2", "True", "{not python"],             # line 8
            ["", "human-3", "True", good]]                          # line 9
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "annotator", "human", "annotations"])
        w.writerows(rows)
    data = load_hq(path)
    assert data.n_rows == 2 and data.bad.total == 5
    where = [ex.split(": ")[0] for exs in data.bad.examples.values() for ex in exs]
    assert sorted(int(w.rsplit(":", 1)[1]) for w in where) == [5, 6, 7, 8, 9]
    assert data.bad.counts == {"bad_annotations": 3, "bad_human_flag": 1, "missing_field": 1}
    assert data.ratings[1, 0, INDEX["Anger"]] == 2


def test_duplicate_rows_are_averaged_and_counted(tmp_path):
    path = tmp_path / "hq.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "annotator", "human", "annotations"])
        w.writerow(["i", "human-1", "True", repr({"X|Awe": 2})])
        w.writerow(["i", "human-1", "True", repr({"X|Awe": 5})])
    data = load_hq(path)
    assert data.ratings[0, 0, INDEX["Awe"]] == 3.5 and data.bad.counts["duplicate_rating"] == 1


def test_wrong_layout_names_the_file(tmp_path):
    path = tmp_path / "hq.csv"
    path.write_text("image,rater,annotations\n")
    with pytest.raises(EmoNetDataError, match="hq.csv: header lacks column"):
        load_hq(path)


def _peak_iterating(path) -> int:
    tracemalloc.start()
    for _ in iter_hq(path):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_reading_is_streamed_memory_does_not_grow_with_rows(tmp_path):
    small = write_hq(tmp_path / "small.csv", human_ratings(latent(40)))
    large = write_hq(tmp_path / "large.csv", human_ratings(latent(400)))  # 10x the rows
    assert _peak_iterating(large) < 1.5 * _peak_iterating(small)


def test_binary_votes_group_into_pairs_with_the_release_spelling(tmp_path):
    path, truth = write_binary(tmp_path / "binary.csv")
    with path.open("a") as fh:
        fh.write("00999,human-1,perhaps,Anger\n00999,human-1,True,Neutral\n")
    bad = BadRows()
    items = load_binary(path, bad)
    assert {(i.image, i.emotion): (i.n_votes, i.n_true) for i in items} == truth
    assert bad.counts == {"bad_value": 1, "unknown_emotion": 1}
    assert all(e in NAMES for e in (i.emotion for i in items))
