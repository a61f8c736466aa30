"""Chunked, resumable JSONL output: a run killed at any point resumes to a byte-identical file."""

from __future__ import annotations

import random

import pytest

from emocaliber.resume import NOT_RECORDED, changed_settings, chunk_seed, run_chunked


def _process(chunk, seed):
    rng = random.Random(seed)
    return [{"item": x, "sample": k, "draw": rng.random()} for x in chunk for k in range(2)]


class Killed(Exception):
    pass


def test_resume_after_kill_gives_identical_file(tmp_path):
    items = list(range(23))
    full = run_chunked(items, tmp_path / "full.jsonl", _process, chunk_size=5, seed=3, rows_per_item=2)
    calls = []

    def dying(chunk, seed):
        calls.append(chunk[0])
        if len(calls) == 3:
            raise Killed
        return _process(chunk, seed)

    part = tmp_path / "part.jsonl"
    with pytest.raises(Killed):
        run_chunked(items, part, dying, chunk_size=5, seed=3, rows_per_item=2)
    # A kill in the middle of a write leaves a cut line: it must be discarded too.
    with part.open("a") as fh:
        fh.write('{"item": 10, "sam')
    redone = []

    def resumed(chunk, seed):
        redone.append(chunk[0])
        return _process(chunk, seed)

    run_chunked(items, part, resumed, chunk_size=5, seed=3, rows_per_item=2)
    assert redone == [10, 15, 20]  # the two finished chunks are not repeated
    assert part.read_bytes() == full.read_bytes()
    run_chunked(items, part, resumed, chunk_size=5, seed=3, rows_per_item=2)
    assert redone == [10, 15, 20]  # a finished run is not redone
    run_chunked(items, part, resumed, chunk_size=5, seed=3, rows_per_item=2, overwrite=True)
    assert redone[3:] == [0, 5, 10, 15, 20] and part.read_bytes() == full.read_bytes()


def test_chunk_seed_depends_on_seed_and_index_only():
    assert chunk_seed(0, 1) == chunk_seed(0, 1)
    assert len({chunk_seed(s, i) for s in range(5) for i in range(50)}) == 250


def test_wrong_row_count_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="expected 4 rows"):
        run_chunked([1, 2], tmp_path / "x.jsonl", lambda c, s: [{}], chunk_size=2, seed=0, rows_per_item=2)


def test_changed_settings_names_each_difference_and_refuses_an_unreadable_record(tmp_path):
    import json

    path = tmp_path / "run_config.json"
    path.write_text(json.dumps({"identity": {"model": "a", "seed": 0, "tasks": None}}))
    fields = ("model", "seed", "tasks", "max_pixels", "weights")
    same = {"model": "a", "seed": 0, "tasks": None, "max_pixels": None}  # a field the record lacks = unset
    assert changed_settings(path, same, fields) == []
    assert changed_settings(path, {**same, "seed": 1, "weights": "w"}, fields) == [
        "seed 0 -> 1", f"weights {NOT_RECORDED!r} -> 'w'"]
    assert changed_settings(path, {**same, "weights": "w"}, fields, ignore=lambda k, old, new: k == "weights") == []
    for text in ("{", json.dumps({"identity": [1]}), json.dumps({"other": 1})):
        path.write_text(text)
        with pytest.raises(ValueError, match="no readable run_config.json"):
            changed_settings(path, same, fields)
