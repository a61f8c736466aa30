"""The evaluation runner end to end on the tiny Qwen2.5-VL and a small SynthEmo split.

The vLLM path runs on the real vLLM up to the model itself (tests/_vllm_utils.py): its engine arguments,
sampling parameters and multimodal processor are vLLM's own; only the model's answers are made up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from _vllm_utils import CPULLM, image_token_count, use_cpu_llm
from PIL import Image

from emocaliber import synthemo
from emocaliber.evaluation import (
    EvalConfig,
    EvalError,
    build_eval_parser,
    config_from_args,
    load_eval_data,
    run_evaluation,
)
from emocaliber.formats import to_released_test
from emocaliber.generation import get_backend
from emocaliber.modeling import ModelNotFoundError
from emocaliber.records import Record, RecordError, iter_jsonl, read_records, write_jsonl
from emocaliber.resume import chunk_seed

ROOT = Path(__file__).resolve().parents[1]
# 8 items in chunks of 3 (3 chunks), 2 samples each, sampled: resumption must reproduce the random draws.
SETTINGS = {"backend": "transformers", "samples": 2, "temperature": 0.7, "max_new_tokens": 8, "batch_size": 3,
            "chunk_size": 3, "seed": 11, "n_bootstrap": 20, "progress": False}
N_ITEMS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """SynthEmo test records (three tasks) plus one record whose image does not exist, in the first chunk."""
    root = tmp_path_factory.mktemp("synthemo")
    synthemo.build_world(root, synthemo.WorldConfig(n_train=0, n_test=3, n_ood=1, seed=5))
    records = read_records(root / "test.jsonl")
    records.insert(1, dataclasses.replace(records[0], id="missing/0", image="images/nowhere/absent.png"))
    assert len(records) == N_ITEMS
    write_jsonl(root / "eval.jsonl", records)
    return root / "eval.jsonl"


def config(model, data, out, **overrides) -> EvalConfig:
    return EvalConfig(model=str(model), data=str(data), out=str(out), **{**SETTINGS, **overrides})


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, data, tmp_path_factory):
    """One uninterrupted run, with the backend built by the runner itself."""
    return run_evaluation(config(tiny_model_dir, data, tmp_path_factory.mktemp("full")))


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return get_backend(str(tiny_model_dir), "transformers", batch_size=SETTINGS["batch_size"], progress=False)


class Killed(Exception):
    pass


class Recording:
    """The real backend, counting calls and optionally dying on call ``die_at`` (a kill between two chunks)."""

    def __init__(self, real, die_at: int | None = None):
        self.real, self.die_at, self.calls = real, die_at, 0
        self.name = real.name

    def generate(self, requests, settings):
        self.calls += 1
        if self.calls == self.die_at:
            raise Killed
        return self.real.generate(requests, settings)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_item_and_sample_gets_a_row_and_a_missing_image_an_error_row(full_run, data):
    rows = _rows(full_run.out_dir / "predictions.jsonl")
    records = read_records(data)
    assert [(r["record"]["id"], r["sample"]) for r in rows] == [(rec.id, k) for rec in records for k in range(2)]
    assert [Record.from_dict(r["record"]) for r in rows[::2]] == records
    missing = [r for r in rows if r["record"]["id"] == "missing/0"]
    assert all(r["response"] is None and "absent.png" in r["error"] for r in missing) and len(missing) == 2
    others = [r for r in rows if r["record"]["id"] != "missing/0"]
    assert all(r["error"] is None and isinstance(r["response"], str) and r["response"] for r in others)
    assert (full_run.n_items, full_run.n_errors, full_run.n_generated) == (N_ITEMS, 1, N_ITEMS)


def test_report_has_both_parse_modes(full_run):
    metrics = json.loads((full_run.out_dir / "metrics.json").read_text())
    assert metrics["parse_modes"] == ["strict", "emocaliber"]
    for mode in ("strict", "emocaliber"):
        block = metrics["modes"][mode]
        assert block["n_rows"] == 2 * N_ITEMS and block["overall"]["parse"]["n_error_rows"] == 2
        assert set(block["tasks"]) == set(synthemo.TASKS)
        # Counted by kind, not by the record id each message starts with.
        assert block["error_reasons"] == {"image not found": 2}
    report = (full_run.out_dir / "report.md").read_text()
    assert "strict" in report and "emocaliber" in report
    assert any(p.endswith(".png") for p in os.listdir(full_run.out_dir))


def test_run_config_records_the_arguments_and_versions(full_run, tiny_model_dir, data):
    saved = json.loads((full_run.out_dir / "run_config.json").read_text())
    expected = dataclasses.asdict(config(tiny_model_dir, data, full_run.out_dir))
    assert saved["args"] == json.loads(json.dumps(expected))
    assert saved["identity"]["backend"] == "transformers" and saved["identity"]["samples"] == 2
    assert saved["versions"]["transformers"] == metadata.version("transformers")
    assert saved["versions"]["torch"] == metadata.version("torch")
    assert saved["data_format"] == "records" and saved["n_items"] == N_ITEMS


def test_killed_run_resumes_to_the_same_bytes(full_run, backend, tiny_model_dir, data, tmp_path):
    cfg = config(tiny_model_dir, data, tmp_path)
    with pytest.raises(Killed):
        run_evaluation(cfg, backend=Recording(backend, die_at=2))  # dies generating the second chunk
    assert len(_rows(tmp_path / "predictions.jsonl")) == 3 * 2  # the first chunk is on disk
    resumed = Recording(backend)
    result = run_evaluation(cfg, backend=resumed)
    assert resumed.calls == 2 and result.n_generated == N_ITEMS - 3  # chunks 2 and 3 only
    assert (tmp_path / "predictions.jsonl").read_bytes() == (full_run.out_dir / "predictions.jsonl").read_bytes()


@pytest.mark.slow
def test_process_killed_mid_run_resumes_to_the_same_bytes(backend, tiny_model_dir, data, tmp_path):
    """A real SIGKILL of the command-line runner after its first chunk is written."""
    args = ["--model", str(tiny_model_dir), "--data", str(data), "--backend", "transformers", "--samples", "2",
            "--temperature", "0.7", "--max-new-tokens", "24", "--batch-size", "1", "--chunk-size", "1",
            "--seed", "11", "--n-bootstrap", "0", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "eval" / "run_vecbench.py"), *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predictions = killed / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if predictions.is_file() and predictions.read_bytes().count(b"\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert predictions.read_bytes().count(b"\n") < 2 * N_ITEMS
    parser = build_eval_parser()
    run_evaluation(config_from_args(parser.parse_args([*args, "--out", str(killed)])), backend=backend)
    reference = tmp_path / "reference"
    run_evaluation(config_from_args(parser.parse_args([*args, "--out", str(reference)])), backend=backend)
    assert predictions.read_bytes() == (reference / "predictions.jsonl").read_bytes()


def test_finished_run_is_not_redone_unless_overwrite(full_run, backend, tiny_model_dir, data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run.out_dir, out)
    before = (out / "predictions.jsonl").read_bytes()
    (out / "metrics.json").unlink()
    # The model is not even looked at: point the run (and its saved identity) at a model that does not exist.
    saved = json.loads((out / "run_config.json").read_text())
    saved["identity"]["model"] = str(tmp_path / "deleted-model")
    (out / "run_config.json").write_text(json.dumps(saved))
    result = run_evaluation(config(tmp_path / "deleted-model", data, out))
    assert result.n_generated == 0 and (out / "metrics.json").is_file()
    assert (out / "predictions.jsonl").read_bytes() == before
    counting = Recording(backend)
    run_evaluation(config(tiny_model_dir, data, out, overwrite=True), backend=counting)
    assert counting.calls == 3 and (out / "predictions.jsonl").read_bytes() == before


def test_resuming_with_other_settings_is_refused(full_run, tiny_model_dir, data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run.out_dir, out)
    with pytest.raises(EvalError, match=r"temperature 0\.7 -> 0\.3"):
        run_evaluation(config(tiny_model_dir, data, out, temperature=0.3))
    with pytest.raises(EvalError, match="samples 2 -> 3"):
        run_evaluation(config(tiny_model_dir, data, out, samples=3))


def test_missing_model_fails_before_generation(data, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        run_evaluation(config(tmp_path / "nope", data, tmp_path / "out"))
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


# ------------------------------------------------------------------------------------------ data loading

def _released_file(data: Path, name: str = "test_8k.jsonl") -> tuple[Path, list[Record]]:
    """The SynthEmo records (without the missing one) as the released test file, beside the images/ folder."""
    records = [r for r in read_records(data) if r.id != "missing/0"]
    rows = [to_released_test(r) for r in records]
    # The released file names images/<dataset>/...; SynthEmo's own paths already start with images/.
    for row in rows:
        part = row["conversations"][0]["content"][0]
        part["image"] = part["image"].removeprefix("images/")
    path = data.parent / name
    write_jsonl(path, rows)
    return path, records


def test_released_test_file_is_detected_and_resolved(data):
    path, records = _released_file(data)
    loaded = load_eval_data(path)
    assert loaded.format == "released" and loaded.image_root == data.parent / "images"
    assert [(r.task, r.candidates, r.ground_truth) for r in loaded.records] == \
        [(r.task, r.candidates, r.ground_truth) for r in records]
    for got, want in zip(loaded.records, records):
        assert (loaded.image_root / got.image).resolve() == (data.parent / want.image).resolve()
    assert load_eval_data(data).format == "records"


def test_task_selection_and_unknown_tasks(data):
    assert {r.task for r in load_eval_data(data, tasks=["SynthEmo-2"]).records} == {"SynthEmo-2"}
    with pytest.raises(EvalError, match="unknown task 'NoSuch-9'; known tasks: .*FI-8"):
        EvalConfig(model="m", data=str(data), tasks=["NoSuch-9"])
    with pytest.raises(EvalError, match="holds no item of task.* FI-8"):
        load_eval_data(data, tasks=["FI-8"])


def test_unreadable_data_files_are_clear_errors(tmp_path, data):
    with pytest.raises(EvalError, match="data file not found"):
        load_eval_data(tmp_path / "absent.jsonl")
    with pytest.raises(EvalError, match="it is a directory"):
        load_eval_data(tmp_path)
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EvalError, match="no usable record .*binary.jsonl:1: not valid UTF-8"):
        load_eval_data(tmp_path / "binary.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvalError, match="no usable record"):
        load_eval_data(tmp_path / "empty.jsonl")


def test_bad_lines_are_skipped_and_reported_unless_strict(data, tmp_path):
    lines = data.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "{not json", json.dumps({**json.loads(lines[2]), "task": "NoSuch-9"}),
                              *lines[3:]]) + "\n", encoding="utf-8")
    loaded = load_eval_data(bad, image_root=data.parent)
    assert len(loaded.records) == N_ITEMS - 2 and len(loaded.skipped) == 2
    assert loaded.skipped[0].startswith(f"{bad}:2:") and "NoSuch-9" in loaded.skipped[1]
    with pytest.raises(EvalError, match=f"{bad}:2"):
        load_eval_data(bad, image_root=data.parent, strict=True)


class Canned:
    """A backend answering every request with one fixed text: for runs about the data, not the model."""

    name = "transformers"

    def generate(self, requests, settings):
        return [["<answer>awe</answer><confidence>0.50</confidence>"] * settings.n for _ in requests]


def _with_lines(data: Path, path: Path, changed: dict[int, str]) -> Path:
    """``data`` with some lines replaced (0-based index -> new text), written to ``path``."""
    lines = data.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(changed.get(i, line) for i, line in enumerate(lines)) + "\n", encoding="utf-8")
    return path


def test_lines_a_run_could_not_use_are_skipped_when_loading(data, tmp_path):
    """Each of these used to load and then stop the run later (predictions.jsonl cannot hold NaN, the prompt is
    looked up in meta, the report keys rows by id)."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    nan = json.dumps(rows[2]).replace('"oracle_confidence": ', '"oracle_confidence": NaN, "x": ', 1)
    assert "NaN" in nan
    changed = {2: nan, 3: json.dumps({**rows[3], "meta": ["oops"]}), 4: json.dumps({**rows[4], "id": {"a": 1}}),
               5: json.dumps({**rows[5], "id": [1]}), 6: json.dumps({**rows[6], "meta": {"w": float("inf")}})}
    bad = _with_lines(data, tmp_path / "bad.jsonl", changed)
    loaded = load_eval_data(bad, image_root=data.parent)
    assert len(loaded.records) == N_ITEMS - 5
    assert [s.split(": ", 1)[0] for s in loaded.skipped] == [f"{bad}:{i}" for i in (3, 4, 5, 6, 7)]
    assert "'meta' holds NaN or Infinity" in loaded.skipped[0] and "'meta' holds NaN" in loaded.skipped[4]
    assert "'meta' must be a JSON object, got list" in loaded.skipped[1]
    assert all("'id' must be a string" in s for s in loaded.skipped[2:4])
    result = run_evaluation(config("unused-model", bad, tmp_path / "out", image_root=str(data.parent)),
                            backend=Canned())
    assert result.n_items == N_ITEMS - 5 and result.metrics["modes"]["strict"]["n_rows"] == 2 * (N_ITEMS - 5)
    with pytest.raises(EvalError, match=f"{bad}:3: .*NaN"):
        load_eval_data(bad, image_root=data.parent, strict=True)


def test_a_repeated_id_is_skipped_so_every_loaded_item_is_scored(data, tmp_path):
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    dup = _with_lines(data, tmp_path / "dup.jsonl", {3: json.dumps({**rows[3], "id": rows[0]["id"]})})
    loaded = load_eval_data(dup, image_root=data.parent)
    assert len(loaded.records) == N_ITEMS - 1
    assert loaded.skipped == [(f"{dup}:4: duplicate id {rows[0]['id']!r}, first read at line 1; "
                               "an item scored twice would weigh double")]
    result = run_evaluation(config("unused-model", dup, tmp_path / "out", image_root=str(data.parent)),
                            backend=Canned())
    strict = result.metrics["modes"]["strict"]
    assert result.n_items == N_ITEMS - 1 and strict["n_rows"] == 2 * result.n_items
    assert strict["skipped_rows"]["n"] == 0
    with pytest.raises(EvalError, match=f"{dup}:4: duplicate id"):
        load_eval_data(dup, image_root=data.parent, strict=True)


def test_the_format_comes_from_the_first_line_that_converts(data):
    path, records = _released_file(data, "released_damaged.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[0]["conversations"]  # one damaged row at the top of a released file
    write_jsonl(path, rows)
    loaded = load_eval_data(path)
    assert loaded.format == "released" and len(loaded.records) == len(records) - 1
    assert len(loaded.skipped) == 1 and loaded.skipped[0].startswith(f"{path}:1:")


def test_a_line_that_is_not_utf8_is_one_bad_line(data, tmp_path):
    lines = data.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(lines[0] + lines[1].replace(b'"source": "', b'"source": "\xe9', 1) + b"".join(lines[2:]))
    loaded = load_eval_data(bad, image_root=data.parent)
    assert len(loaded.records) == N_ITEMS - 1
    assert len(loaded.skipped) == 1 and loaded.skipped[0].startswith(f"{bad}:2: not valid UTF-8 (byte 0xe9")
    with pytest.raises(EvalError, match=f"{bad}:2: not valid UTF-8"):
        load_eval_data(bad, image_root=data.parent, strict=True)
    with pytest.raises(RecordError, match=f"{bad}:2: not valid UTF-8"):  # iter_jsonl's contract without errors
        list(iter_jsonl(bad))


def test_an_image_the_processor_refuses_is_an_error_row_and_the_run_goes_on(backend, tiny_model_dir, data,
                                                                            tmp_path):
    """A 600 x 2 image opens, but Qwen2.5-VL's processor refuses its aspect ratio; inside a batch that error
    used to end the run, at the same chunk on every rerun."""
    keep = [r for r in read_records(data) if r.id != "missing/0"][:2]
    for r in keep:
        (tmp_path / r.image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data.parent / r.image, tmp_path / r.image)
    Image.new("RGB", (600, 2), "red").save(tmp_path / "thin.png")
    write_jsonl(tmp_path / "thin.jsonl", [keep[0], dataclasses.replace(keep[0], id="thin/0", image="thin.png"),
                                          keep[1]])
    result = run_evaluation(config(tiny_model_dir, tmp_path / "thin.jsonl", tmp_path / "out", samples=1),
                            backend=backend)
    rows = _rows(tmp_path / "out" / "predictions.jsonl")
    assert [r["error"] is None for r in rows] == [True, False, True] and result.n_errors == 1
    assert "aspect ratio 300:1" in rows[1]["error"]
    assert result.metrics["modes"]["strict"]["error_reasons"] == {"image size not accepted": 1}


# -------------------------------------------------------------------------------------- the vLLM boundary

@pytest.fixture
def cpu_llm(monkeypatch):
    return use_cpu_llm(monkeypatch)


def _answer_from_the_image(prompt, engine_input, k):
    """The made-up model answer: a valid response that names the mean pixel of the image it was given."""
    mean = int(np.asarray(prompt["multi_modal_data"]["image"]).mean())
    return f"<answer>awe</answer><confidence>0.{k + 5}</confidence> mean={mean}"


def test_vllm_path_up_to_the_engine(cpu_llm, tiny_model_dir, data, tmp_path, monkeypatch):
    """The runner on the real vLLM (arguments, sampling parameters, prompt and image processing); only the model's
    answers are made up (tests/_vllm_utils.py). The bounds differ from the checkpoint's saved ones, so an engine
    that did not get them would expand each image to another number of tokens than transformers does."""
    from emocaliber.modeling import load_processor

    monkeypatch.setattr(CPULLM, "answer", staticmethod(_answer_from_the_image))
    path, records = _released_file(data, "released_vllm.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["conversations"][0]["content"][1]["text"] = "A question worded by the release? ['awe', 'fear']"
    write_jsonl(path, rows)
    bounds = {"min_pixels": 84 * 84, "max_pixels": 112 * 112}
    cfg = config(tiny_model_dir, path, tmp_path, backend="vllm", samples=3, chunk_size=4, max_new_tokens=99, **bounds)
    result = run_evaluation(cfg)

    (engine,) = cpu_llm
    assert engine.kwargs["model"] == str(tiny_model_dir) and engine.kwargs["seed"] == 11
    assert engine.kwargs["mm_processor_kwargs"] == bounds
    assert [len(prompts) for prompts, _, _ in engine.calls] == [4, 3]  # one engine call per chunk, K samples inside
    for index, (_, params, _) in enumerate(engine.calls):
        for p in params:
            assert (p.n, p.temperature, p.top_p, p.max_tokens) == (3, 0.7, 1.0, 99)
            assert p.seed == chunk_seed(11, index)
    submitted = [p for prompts, _, _ in engine.calls for p in prompts]
    assert "A question worded by the release? ['awe', 'fear']" in submitted[0]["prompt"]
    hf = load_processor(tiny_model_dir, **bounds)
    engine_inputs = [e for _, _, inputs in engine.calls for e in inputs]
    for prompt, engine_input, record in zip(submitted, engine_inputs, records, strict=True):
        assert prompt["prompt"].rstrip().endswith("assistant")
        with Image.open(data.parent / record.image) as im:
            assert np.array_equal(np.asarray(prompt["multi_modal_data"]["image"]), np.asarray(im.convert("RGB")))
        if record is not records[0]:
            assert str(record.candidates) in prompt["prompt"]
        # vLLM's own Qwen2.5-VL processor gives the image exactly the tokens transformers gives it
        expected = hf(text=[prompt["prompt"]], images=[prompt["multi_modal_data"]["image"]])["input_ids"][0]
        assert image_token_count(engine_input["prompt_token_ids"], hf.image_token_id) == image_token_count(
            expected, hf.image_token_id) == 9  # 56 x 56 pixels raised to the 84 x 84 floor: 3 x 3 merged patches
    out_rows = _rows(tmp_path / "predictions.jsonl")
    assert len(out_rows) == 3 * len(records) and result.n_errors == 0
    for row, record in zip(out_rows[::3], records):
        with Image.open(data.parent / record.image) as im:
            assert row["response"].endswith(f"mean={int(np.asarray(im.convert('RGB')).mean())}")
    strict = result.metrics["modes"]["strict"]["overall"]["parse"]
    assert strict["confidence_parse_rate"] == 1.0 and strict["n_error_rows"] == 0


def test_a_wrong_image_root_fails_before_the_model_loads(data, tmp_path):
    with pytest.raises(EvalError, match="none of the first 8 images exists under .*--image-root"):
        load_eval_data(data, image_root=tmp_path)


def test_no_confidence_asks_the_stage1_question(data):
    from emocaliber.evaluation import eval_request

    items = load_eval_data(data)
    record = items.records[0]
    asked = [p["text"] for p in eval_request(record, items.image_root).messages[-1]["content"] if p["type"] == "text"]
    plain = [p["text"] for p in eval_request(record, items.image_root, with_confidence=False).messages[-1]["content"]
             if p["type"] == "text"]
    assert "<confidence>" in asked[0] and "<confidence>" not in plain[0]
    args = build_eval_parser().parse_args(["--model", "m", "--data", str(data), "--no-confidence"])
    assert config_from_args(args).with_confidence is False
