"""Chunked, resumable JSONL output: a run killed at any point resumes to a byte-identical file."""

from __future__ import annotations

import random

import pytest

from emocaliber.resume import chunk_seed, run_chunked


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
