"""Faults a user meets with real files: reruns and resumes with changed inputs, killed saves, concurrent writers,
links in raw data, dropped input, records without reasoning, a full disk, corrupt weights and misspelt flags.
Each test reproduces one way the pipeline used to go silently wrong (docs/reliability.md lists them)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sft_utils import build_sft_world, sft_config
from fixtures_raw import make_fi

from emocaliber import synthemo
from emocaliber.records import read_records, resolve_image, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_sft_world(tmp_path_factory.mktemp("rel-world"))


def _model_args(model_dir, **kw):
    from emocaliber.train.configs import ModelArgs

    return ModelArgs(model_name_or_path=str(model_dir), dtype="float32", **kw)


def _data_args(train_file, **kw):
    from emocaliber.train.configs import DataArgs

    return DataArgs(train_file=str(train_file), **kw)


# --------------------------------------------------------------------------------------- training output dirs


def test_rerun_into_a_finished_dir_with_other_settings_is_refused(tiny_model_dir, world, tmp_path):
    """Other learning rate and train file into a finished stage-1 dir: refused naming both, not 0 steps + exit 0
    with the new settings recorded over the old weights; --overwrite trains afresh."""
    from transformers import TrainerCallback

    from emocaliber.train.configs import ConfigError
    from emocaliber.train.sft import run_sft

    out = tmp_path / "stage1"
    cfg = {"save_strategy": "steps", "save_steps": 2}
    run_sft(_model_args(tiny_model_dir), _data_args(world["stage1"]), sft_config(out, **cfg), stage="stage1")
    weights = (out / "model.safetensors").read_bytes()
    other = tmp_path / "other.jsonl"
    write_jsonl(other, read_records(world["stage1"])[:6])
    changed = sft_config(out, learning_rate=2e-3, **cfg)
    with pytest.raises(ConfigError, match=r"learning_rate 0\.001 -> 0\.002.*train_file") as e:
        run_sft(_model_args(tiny_model_dir), _data_args(other, image_root=str(world["root"])), changed,
                stage="stage1")
    assert "--overwrite" in str(e.value) and "\n" not in str(e.value)
    assert (out / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "emocaliber_training.json").read_text())["training"]["learning_rate"] == 1e-3

    steps = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    run_sft(_model_args(tiny_model_dir), _data_args(other, image_root=str(world["root"]), overwrite=True), changed,
            stage="stage1", callbacks=[Count()])
    assert steps == [1, 2]
    assert json.loads((out / "emocaliber_training.json").read_text())["training"]["learning_rate"] == 2e-3


def test_auto_resume_skips_partial_checkpoints(tiny_model_dir, world, tmp_path, caplog):
    """A kill during a save leaves a truncated model.safetensors or no trainer_state.json: resume falls back to
    the newest complete checkpoint and says which, instead of crashing with a SafetensorError."""
    from transformers import TrainerCallback

    from emocaliber.train.sft import run_sft

    out = tmp_path / "run"

    def cfg():  # a fresh config per run, as a new process would parse it
        return sft_config(out, max_steps=3, save_strategy="steps", save_steps=1, resume_from_checkpoint="auto")

    run_sft(_model_args(tiny_model_dir), _data_args(world["stage1"]), cfg(), stage="stage1")
    weights = out / "checkpoint-3" / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    (out / "checkpoint-2" / "trainer_state.json").unlink()

    steps = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    with caplog.at_level("WARNING", logger="emocaliber"):
        run_sft(_model_args(tiny_model_dir), _data_args(world["stage1"]), cfg(), stage="stage1",
                callbacks=[Count()])
    assert steps == [2, 3]
    assert f"resuming from {out / 'checkpoint-1'}" in caplog.text
    assert "checkpoint-3" in caplog.text and "truncated" in caplog.text


def test_a_checkpoint_is_complete_only_once_marked():
    from emocaliber.train.checkpoint import COMPLETE_FILE, checkpoint_problem, mark_complete

    d = Path(os.environ.get("TMPDIR", "/tmp")) / f"ckpt-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "trainer_state.json").write_text("{}")
    assert "not marked complete" in checkpoint_problem(d)
    mark_complete(d, step=1)
    assert checkpoint_problem(d) is None and json.loads((d / COMPLETE_FILE).read_text())["step"] == 1
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    shutil.rmtree(d)


def test_stage1_refuses_records_without_reasoning(tiny_model_dir, world, tmp_path, caplog):
    from emocaliber.train.configs import DataArgs
    from emocaliber.train.data import DataError, build_datasets

    records = read_records(world["stage1"])
    bare = tmp_path / "bare.jsonl"
    write_jsonl(bare, [dataclasses.replace(r, reasoning=None) if i < 2 else r for i, r in enumerate(records)])
    args = DataArgs(train_file=str(bare), image_root=str(world["root"]))
    with pytest.raises(DataError, match=r"bare\.jsonl:1: .*no 'reasoning'.*allow_missing_reasoning"):
        build_datasets(args)
    with caplog.at_level("WARNING", logger="emocaliber"):
        train, _ = build_datasets(dataclasses.replace(args, allow_missing_reasoning=True))
    assert len(train) == len(records) and "2 of 16 records have no reasoning" in caplog.text
    train, _ = build_datasets(dataclasses.replace(args, skip_bad_records=True))
    assert len(train) == len(records) - 2


# ------------------------------------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel-eval")
    synthemo.build_world(root, synthemo.WorldConfig(n_train=0, n_test=3, n_ood=1, seed=5))
    return root / "test.jsonl"


class Canned:
    """A backend answering every request with one fixed text, optionally dying on call ``die_at``."""

    name = "transformers"

    def __init__(self, text="<answer>awe</answer><confidence>0.50</confidence>", die_at=None):
        self.text, self.die_at, self.calls = text, die_at, 0

    def generate(self, requests, settings):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return [[self.text] * settings.n for _ in requests]


def _eval_config(model, data, out, **kw):
    from emocaliber.evaluation import EvalConfig

    settings = {"backend": "transformers", "chunk_size": 2, "n_bootstrap": 0, "progress": False, **kw}
    return EvalConfig(model=str(model), data=str(data), out=str(out), **settings)


def test_eval_resume_refuses_other_weights_at_the_same_path(tiny_model_dir, eval_data, tmp_path):
    from safetensors.torch import load_file, save_file

    from emocaliber.evaluation import EvalError, run_evaluation

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(_eval_config(model, eval_data, out), backend=Canned(die_at=2))
    tensors = load_file(model / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EvalError, match="weights"):
        run_evaluation(_eval_config(model, eval_data, out), backend=Canned())
    shutil.copy(tiny_model_dir / "model.safetensors", model / "model.safetensors")
    assert run_evaluation(_eval_config(model, eval_data, out), backend=Canned()).n_generated > 0


def test_a_second_evaluation_into_the_same_out_fails_naming_the_pid(tiny_model_dir, eval_data, tmp_path):
    from emocaliber.evaluation import run_evaluation
    from emocaliber.locking import LOCK_FILE, LockedError

    out = tmp_path / "out"
    out.mkdir()
    holder = _hold_lock(out / LOCK_FILE)
    try:
        start = time.monotonic()
        with pytest.raises(LockedError, match=f"PID {holder.pid}"):
            run_evaluation(_eval_config(tiny_model_dir, eval_data, out), backend=Canned())
        assert time.monotonic() - start < 5
        assert not (out / "predictions.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    run_evaluation(_eval_config(tiny_model_dir, eval_data, out), backend=Canned())  # the kernel freed the lock
    rows = (out / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == len(read_records(eval_data))


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding ``flock`` on ``path`` with its PID written in it, as a concurrent run would."""
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, os, time\n"
                                f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
                                "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, f'{os.getpid()}\\n'.encode())\n"
                                "print('locked', flush=True)\ntime.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_training_run_into_the_same_output_dir_fails_naming_the_pid(tiny_model_dir, world, tmp_path):
    from emocaliber.locking import LOCK_FILE, LockedError
    from emocaliber.train.sft import run_sft

    out = tmp_path / "stage1"
    out.mkdir()
    holder = _hold_lock(out / LOCK_FILE)
    try:
        with pytest.raises(LockedError, match=f"PID {holder.pid}"):
            run_sft(_model_args(tiny_model_dir), _data_args(world["stage1"]), sft_config(out), stage="stage1")
    finally:
        holder.kill()
        holder.wait()
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_two_corpus_builds_into_one_samples_file_do_not_interleave(tmp_path):
    from emocaliber.locking import LockedError
    from emocaliber.resume import run_chunked

    out = tmp_path / "samples.jsonl"
    holder = _hold_lock(tmp_path / ".samples.jsonl.lock")
    try:
        with pytest.raises(LockedError, match=f"PID {holder.pid}"):
            run_chunked(list(range(4)), out, lambda chunk, seed: [{"i": i} for i in chunk], chunk_size=2, seed=0)
    finally:
        holder.kill()
        holder.wait()
    run_chunked(list(range(4)), out, lambda chunk, seed: [{"i": i} for i in chunk], chunk_size=2, seed=0)
    assert out.read_text().count("\n") == 4


def test_corpus_resume_refuses_other_weights_at_the_same_path(tiny_model_dir, tmp_path):
    from emocaliber.corpora import CorpusError, collect_samples

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    records = read_records(build_sft_world(tmp_path / "w", n_train=2)["stage1"])[:4]
    calls = []

    def responder(chunk, seed):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first chunk
        return [{"id": r.id, "responses": ["x"]} for r in chunk]

    kwargs = {"config": {"model": str(model)}, "seed": 0, "chunk_size": 2, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        collect_samples(records, responder, tmp_path / "samples.jsonl", **kwargs)
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(CorpusError, match="model_sha256"):
        collect_samples(records, responder, tmp_path / "samples.jsonl", **kwargs)


def test_dropped_lines_are_stated_in_the_report_and_fail_the_run(tiny_model_dir, eval_data, tmp_path, capsys,
                                                                    monkeypatch):
    from emocaliber import evaluation

    lines = eval_data.read_text().splitlines()[:8]
    bad = tmp_path / "eval.jsonl"
    bad.write_text("\n".join(lines[:2] + ["{not json"] * 3 + ['{"id": "x"}'] * 3) + "\n")
    for name in {json.loads(line)["image"].split("/")[0] for line in lines[:2]}:
        os.symlink(eval_data.parent / name, tmp_path / name)
    monkeypatch.setattr(evaluation, "_build_backend", lambda config, name: Canned())
    argv = ["--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "out"), "--no-progress",
            "--n-bootstrap", "0"]
    assert evaluation.main(argv) == 1
    captured = capsys.readouterr()
    assert "75.0% of the lines" in captured.err and "--max-dropped" in captured.err
    report = (tmp_path / "out" / "report.md").read_text()
    assert "8 data lines read, 6 dropped (75.0%)" in report
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["dropped_input"]["n_dropped"] == 6 and sum(metrics["dropped_input"]["reasons"].values()) == 6
    assert evaluation.main([*argv, "--max-dropped", "1"]) == 0


def test_a_failed_evaluation_leaves_no_empty_output_dir(eval_data, tmp_path):
    from emocaliber.evaluation import run_evaluation
    from emocaliber.modeling import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        run_evaluation(_eval_config(tmp_path / "no-model", eval_data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_training_run_that_fails_its_checks_leaves_no_output_dir(tiny_model_dir, tmp_path):
    """The output directory is claimed (locked, fingerprinted) before the data are checked; a run stopped by a
    missing train file must remove it again at exit rather than leave a directory holding only bookkeeping."""
    from _sft_utils import run_script

    out = tmp_path / "stage1"
    res = run_script([sys.executable, str(ROOT / "recipes" / "stage1_sft.py"), "--config",
                      str(ROOT / "recipes" / "tiny" / "stage1.yaml"), "--model_name_or_path", str(tiny_model_dir),
                      "--output_dir", str(out), "--train_file", str(tmp_path / "missing.jsonl")])
    assert res.returncode == 2 and "data file not found" in res.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_a_full_disk_is_one_line_naming_the_file_and_the_resume(tiny_model_dir, eval_data, tmp_path, capsys,
                                                                 monkeypatch):
    from emocaliber import evaluation

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluation, "_build_backend", lambda config, name: Canned())
    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    code = evaluation.main(["--model", str(tiny_model_dir), "--data", str(eval_data), "--out", str(out),
                            "--no-progress", "--n-bootstrap", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"cannot write {out / 'predictions.jsonl'}: No space left on device; the disk is full" in err
    assert not (out / "metrics.json").exists()


def test_a_full_disk_while_training_is_one_line_naming_the_file(capsys):
    """A save that hits ENOSPC: the recipe's error is one line naming the file and the remedy (exit 2); the
    checkpoint it was writing is not marked complete, so ``auto`` resume skips it."""
    from emocaliber.train.errors import user_errors_exit

    with pytest.raises(SystemExit) as e, user_errors_exit("stage1_sft.py"):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/stage1/checkpoint-3/model.safetensors")
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err == ("stage1_sft.py: error: cannot write runs/stage1/checkpoint-3/model.safetensors: No space left on "
                   "device; the disk is full; free space or choose another output location, then rerun")
    with pytest.raises(ZeroDivisionError), user_errors_exit("stage1_sft.py"):  # a bug keeps its traceback
        raise ZeroDivisionError


def test_corrupt_weights_are_one_line_naming_the_file(tiny_model_dir, tmp_path):
    from emocaliber.modeling import load_model_and_processor
    from emocaliber.weights import CorruptWeightsError

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    size = (model / "model.safetensors").stat().st_size
    with (model / "model.safetensors").open("r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(CorruptWeightsError, match=rf"model\.safetensors is truncated \({size // 2} of {size} bytes"):
        load_model_and_processor(model)


def test_misspelt_flags_get_a_suggestion(capsys):
    from trl import SFTConfig, TrlParser

    from emocaliber.evaluation import build_eval_parser
    from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs, parse_args_and_config

    with pytest.raises(SystemExit):
        build_eval_parser("run_vecbench").parse_args(["--model", "m", "--data", "d", "--max-new-tokns", "8"])
    assert "did you mean --max-new-tokens?" in capsys.readouterr().err
    from emocaliber.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--data", "d", "--max-new-tokns", "8"])
    assert "did you mean --max-new-tokens?" in capsys.readouterr().err
    parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
    with pytest.raises(ConfigError, match=r"unknown option --lerning_rate \(did you mean --learning_rate\?\)"):
        parse_args_and_config(parser, ["--model_name_or_path", "m", "--train_file", "t", "--lerning_rate", "1"])


# ------------------------------------------------------------------------------------------------- data prep


def test_symlinks_in_a_raw_tree_resolve_to_their_files(tmp_path):
    from emocaliber.sources import FISource, SkipLog
    from emocaliber.vecbench import BuildConfig, build_vecbench

    base = make_fi(tmp_path / "raw", {"amusement": ["a.jpg", "b.jpg"], "awe": ["c.jpg"]})
    tree = base / "emotion_dataset"
    os.symlink(tree / "amusement" / "b.jpg", tree / "amusement" / "0link.jpg")  # sorts before its target
    os.symlink(tree / "awe", tree / "awe_linked")  # a linked folder inside the root
    outside = tmp_path / "outside.jpg"
    shutil.copy(tree / "awe" / "c.jpg", outside)
    os.symlink(outside, tree / "awe" / "escape.jpg")

    skips = SkipLog()
    result = build_vecbench([FISource(base)], BuildConfig(out=tmp_path / "out", test_size=1, progress=False,
                                                          workers=0), skips)
    counts = {reason: sum(c.values()) for reason, c in skips.counts.items()}
    assert counts.get("linked_file") == 1 and counts.get("linked_folder") == 1
    assert counts.get("path_escapes_root") == 1 and "non_image_file" not in counts and "duplicate" not in counts
    records = [r for split in ("train", "test") for r in read_records(result.out / f"{split}.jsonl")]
    assert sorted({Path(r.image).name for r in records}) == ["a.jpg", "b.jpg", "c.jpg"]
    for r in records:  # every output image is a real file inside the output root, as the training loader needs
        path = resolve_image(result.out / "images" if (result.out / "images").is_dir() else result.out, r.image)
        assert path.is_file() and not path.is_symlink()
