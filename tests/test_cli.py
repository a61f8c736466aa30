"""The ``emocaliber`` command and ``eval/run_vecbench.py``: help, predictions, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emocaliber import cli
from emocaliber.cli import COMMANDS, main
from emocaliber.evaluation import build_eval_parser
from emocaliber.parsing import parse_response
from emocaliber.records import Record, write_jsonl
from emocaliber.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(path)
    return path


def _option_strings(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_eval_subcommand_and_script_share_their_options(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    sub = capsys.readouterr().out
    assert all(opt in sub for opt in _option_strings(build_eval_parser()))
    assert {"--model", "--data", "--image-root", "--tasks", "--backend", "--samples", "--temperature", "--top-p",
            "--batch-size", "--max-new-tokens", "--out", "--seed", "--parse-mode", "--overwrite",
            "--n-bootstrap"} <= _option_strings(build_eval_parser())


@pytest.mark.parametrize("argv, expected", [
    (["--help"], ["predict", "eval", "prepare synthemo", "train sft", "train grpo", "merge-lora", "demo",
                  "examples:"]),
    (["predict", "--help"], ["examples:", "wudq/EmoCaliber", "--candidates", "--task", "--json"]),
    (["eval", "--help"], ["examples:", "test_8k.jsonl", "resume", "--parse-mode"]),
    (["prepare", "cot", "--help"], ["--teacher", "stage1.jsonl"]),
    (["train", "sft", "--help"], ["--with_confidence", "--learning_rate", "stage1_sft.py"]),
    (["demo", "--help"], ["--quick", "--out"]),
])
def test_help_explains_with_examples(argv, expected, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 0
    text = capsys.readouterr().out
    assert all(e in text for e in expected), text


def test_every_command_is_a_main_function_that_takes_argv():
    """The table names a ``main(argv)``-style function for every command, each importable; the table is data."""
    import inspect

    assert set(COMMANDS) == {"prepare vecbench", "prepare released", "prepare webemo", "prepare synthemo",
                             "prepare cot", "prepare targets", "prepare blends", "prepare pseudo-labels",
                             "prepare emonet", "prepare holdout", "train sft", "train grpo", "merge-lora", "eval",
                             "eval-blends", "compare", "eval-emonet", "predict", "demo", "serve"}
    for name in COMMANDS:
        entry = cli.load(name)
        assert next(iter(inspect.signature(entry).parameters)) == "argv", name


def test_a_command_joins_with_one_line(monkeypatch):
    import types

    module = types.ModuleType("extra_command")
    module.main = lambda argv=None: 7 if list(argv) == ["--out", "x"] else 1
    monkeypatch.setitem(sys.modules, "extra_command", module)
    monkeypatch.setitem(COMMANDS, "extra", "extra_command:main")
    assert main(["extra", "--out", "x"]) == 7
    assert cli.resolve(["prepare", "cot", "--x"]) == ("prepare cot", ["--x"])
    assert cli.resolve(["nothing"]) is None


@pytest.mark.parametrize("argv, message", [(["nosuch"], "unknown command 'nosuch'"),
                                           (["prepare"], "'prepare' needs one of: vecbench, released"),
                                           (["train", "ppo"], "'train' needs one of: sft, grpo")])
def test_unknown_command_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_predict_prints_json_with_the_parsed_answer(tiny_model_dir, image, capsys):
    code = main(["predict", str(image), str(image), "--model", str(tiny_model_dir), "--json",
                 "--max-new-tokens", "8", "--candidates", "positive,negative"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["image"] == str(image) and first["candidates"] == ["positive", "negative"]
    parsed = parse_response(first["raw"], first["candidates"], mode="strict")
    assert (first["label"], first["confidence"], first["valid"]) == (parsed.label, parsed.confidence,
                                                                      parsed.valid_format)
    assert json.loads(lines[1])["raw"] == first["raw"]  # greedy: the same image, the same answer
    # An answer outside the candidate list is an error (exit 1, one line per image), not a quiet "(no label)".
    assert code == (0 if first["label"] else 1)
    assert ("names none of the candidates" in captured.err) == (first["label"] is None)


def test_predict_plain_output_names_the_image(tiny_model_dir, image, capsys):
    code = main(["predict", str(image), "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--task", "FI-8"])
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{image}\t")
    assert code == (1 if "(no label)" in captured.out else 0)


def test_predict_answer_outside_the_candidates_is_an_error(tiny_model_dir, image, capsys, monkeypatch):
    from emocaliber.inference import EmoCaliber, Prediction

    def answer_awe(self, images, **kwargs):  # a model that names a label the user did not offer
        raw = "<answer>awe</answer><confidence>0.95</confidence>"
        parsed = parse_response(raw, ["joy"], mode="strict")
        return [Prediction(label=parsed.label, confidence=parsed.confidence, reasoning={}, raw=raw,
                           valid=parsed.valid_format, problems=list(parsed.problems), candidates=["joy"])
                for _ in images]

    monkeypatch.setattr(EmoCaliber, "predict_batch", answer_awe)
    code = main(["predict", str(image), "--model", str(tiny_model_dir), "--candidates", "joy"])
    captured = capsys.readouterr()
    assert "(no label)" in captured.out and code == 1
    assert f"{image}: the model's answer names none of the candidates ['joy']" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["predict", "https://example.com/x.jpg", "--model", "{model}"], "is a URL"),
    (["predict", "{image}", "--model", "{model}", "--task", "NoSuch-3"], "unknown task"),
    (["predict", "{missing}", "--model", "{model}"], "image not found"),
    (["predict", "{thin}", "--model", "{model}"], "aspect ratio 300:1"),
    (["predict", "{image}", "--model", "{missing}"], "no model directory"),
    (["eval", "--model", "{missing}", "--data", "{data}"], "no model directory"),
    (["eval", "--model", "{model}", "--data", "{missing}"], "data file not found"),
    (["eval", "--model", "{model}", "--data", "{data}", "--tasks", "FI-8"], "holds no item of task(s) FI-8"),
])
def test_bad_input_is_one_line_and_exit_1(argv, message, tiny_model_dir, image, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    labels = list(get_task("FI-2").labels)
    write_jsonl(data, [Record(id="a", task="FI-2", image=image.name, candidates=labels, ground_truth=labels[0],
                              split="test", source="FI")])
    Image.new("RGB", (600, 2)).save(tmp_path / "thin.png")
    values = {"model": tiny_model_dir, "image": image, "missing": tmp_path / "missing", "data": data,
              "thin": tmp_path / "thin.png"}
    eval_extra = ["--out", str(tmp_path / "out"), "--image-root", str(image.parent)]
    argv = [a.format(**values) for a in argv] + (eval_extra if argv[0] == "eval" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith(f"emocaliber {argv[0]}: error: ")


@pytest.mark.parametrize("option, value, message", [
    ("--max-new-tokens", "0", "must be >= 1, got 0"),
    ("--temperature", "-1", "must be a number >= 0"),
    ("--temperature", "nan", "must be a number >= 0"),
    ("--temperature", "warm", "expected a number"),
    ("--min-pixels", "0", "must be >= 1"),
])
def test_predict_values_are_checked_by_the_parser_before_any_model_loads(option, value, message, tmp_path, capsys):
    # A model that does not exist: reaching it would be exit code 1, "no model directory".
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "x.png", "--model", str(tmp_path / "missing"), option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {option}: {message}" in err and err.count("\n") == 1


def test_unknown_task_option_is_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", "m", "--data", "d", "--tasks", "FI-8,NoSuch-3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown task 'NoSuch-3'" in err and err.count("\n") == 1


def test_script_reports_a_missing_model_without_traceback(tmp_path):
    data = tmp_path / "test.jsonl"
    labels = list(get_task("FI-2").labels)
    write_jsonl(data, [Record(id="a", task="FI-2", image="a.png", candidates=labels, ground_truth=labels[0],
                              split="test", source="FI")])
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    done = subprocess.run([sys.executable, str(ROOT / "eval" / "run_vecbench.py"), "--model",
                           str(tmp_path / "no-model"), "--data", str(data), "--out", str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("run_vecbench.py: error: ") and str(tmp_path / "no-model") in line


def test_help_does_not_import_torch():
    code = ("import sys; from emocaliber.cli import main; main(['--help']); "
            "assert 'torch' not in sys.modules and 'emocaliber.demo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_vllm_backend_without_vllm_is_one_line(tiny_model_dir, image, tmp_path, capsys, monkeypatch):
    from emocaliber import generation

    monkeypatch.setattr(generation, "vllm_available", lambda: False)  # as on a machine without the extra
    data = tmp_path / "test.jsonl"
    labels = list(get_task("FI-2").labels)
    write_jsonl(data, [Record(id="a", task="FI-2", image=image.name, candidates=labels, ground_truth=labels[0],
                              split="test", source="FI")])
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--image-root", str(image.parent),
            "--backend", "vllm", "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'emocaliber[vllm]'" in err
