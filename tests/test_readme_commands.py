"""The README's commands run as written, in README order, in a temporary checkout with miniature inputs.

Every shell command of the README's Data, Training and Evaluation sections is read from ``README.md`` itself
(```` ```bash ```` blocks, backslash continuations joined, comments dropped) and looked up in :data:`PLAN`, which
says how this test runs it:

* ``run``: as written (``extra`` empty), or with the size overrides in ``extra`` appended (argparse and TrlParser
  keep the last value of a repeated flag, so an appended ``--max_steps 1`` replaces the YAML's two epochs);
* ``parse``: parse-only, for what needs GPUs, several nodes or the 7B model: the entry point's own parser reads
  the command's flags and YAML config into its dataclasses (``extra`` appended, e.g. ``--bf16 false`` because
  bf16 needs a GPU) and the training function is replaced by a recorder; ``accelerate launch`` goes through
  accelerate's own launch parser, its ``--config_file`` is loaded, and the training script is run with the same
  recorder.

A README command missing from the plan fails the test (so a new command forces a decision), and so does a plan
entry the README no longer has. The miniature inputs sit where the README says a user's would: ``raw/FI`` and the
other raw trees (``fixtures_raw``), the released test file under ``EmoCaliber/``, VEC-CoT files under
``VECBench/``, ``photo.jpg``, and ``ckpt/`` and ``wudq/EmoCaliber`` as local directories holding the tiny random
model (a local directory wins over a hub id, so no command is rewritten). ``recipes/``, ``eval/`` and
``data_prep/`` link to the repository's, as in a clone. Commands run in-process (the ``emocaliber`` console script
is ``emocaliber.cli:main``; ``python script.py`` runs the script as ``__main__``) to share one import of torch.
The stage-1 run, the targets and the evaluations use the tiny model, whose answers are mostly unparseable:
this test checks that each command does its job on the files the earlier ones wrote, not what it scores.
"""

from __future__ import annotations

import json
import runpy
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_raw import make_all, write_image
from test_released_text import ANSWER, IMAGE, QUESTION, _row

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("## Data", "## Training", "## Evaluation and inference")


@dataclass(frozen=True)
class Step:
    mode: str  # "run" or "parse"
    extra: tuple[str, ...] = ()  # appended to the README's arguments
    why: str = ""  # why not as written; "" when it is
    unlabelled_ok: bool = False  # predict: the untrained tiny model may name no candidate (exit 1, said so)


#: Every README command (as one line, comments dropped) -> how it runs here.
PLAN: dict[str, Step] = {
    # ---- Data
    "emocaliber prepare vecbench --fi raw/FI --emoset raw/EmoSet-118K --webemo raw/WEBEmo "
    "--abstract raw/testImages_abstract --artphoto raw/testImages_artphoto --unbiasedemo raw/UnBiasedEmo "
    "--out data/vecbench": Step("run"),
    "emocaliber prepare webemo --help": Step("run"),
    "emocaliber prepare released import --test EmoCaliber/input_data/test_8k.jsonl "
    "--cot VECBench/VEC-CoT/stage1_86k.jsonl --cot VECBench/VEC-CoT/stage2_43k_w_conf.jsonl "
    "--cot VECBench/VEC-CoT/stage3_14k.jsonl --out data/released": Step("run"),
    "emocaliber prepare synthemo --out data/synthemo --n-train 1000 --n-test 200 --seed 0":
        Step("run"),
    "emocaliber prepare cot --records data/synthemo/train.jsonl --image-root data/synthemo "
    "--out data/synthemo/cot --teacher synthemo --samples 1": Step("run"),
    # ---- Training
    "emocaliber train sft --config recipes/qwen2.5-vl-7b/stage1.yaml":
        Step("parse", ("--bf16", "false"), "7B model on a GPU; bf16 needs a GPU"),
    "accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage1_sft.py "
    "--config recipes/qwen2.5-vl-7b/stage1.yaml": Step("parse", ("--bf16", "false"), "8 GPUs, ZeRO-3"),
    "accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_machines 2 --num_processes 16 "
    "--machine_rank 0 --main_process_ip 10.0.0.1 --main_process_port 29500 recipes/stage1_sft.py "
    "--config recipes/qwen2.5-vl-7b/stage1.yaml": Step("parse", ("--bf16", "false"), "two nodes of 8 GPUs"),
    "accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage2_sft.py "
    "--config recipes/qwen2.5-vl-7b/stage2.yaml": Step("parse", ("--bf16", "false"), "8 GPUs, ZeRO-3"),
    "accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage3_grpo.py "
    "--config recipes/qwen2.5-vl-7b/stage3.yaml": Step("parse", ("--bf16", "false"), "8 GPUs, ZeRO-3, vLLM"),
    "python -c from emocaliber.modeling import build_tiny_model; build_tiny_model('runs/tiny/base')":
        Step("run"),
    "emocaliber train sft --config recipes/tiny/stage1.yaml":
        Step("run", ("--max_steps", "1"), "one optimizer step instead of two epochs"),
    "emocaliber prepare targets --model runs/tiny/stage1 --data data/synthemo/cot/stage2_pool.jsonl "
    "--image-root data/synthemo --samples 8 --out data/synthemo/cot/stage2.jsonl":
        Step("run", ("--max-new-tokens", "8"), "short samples from the one-step model, not up to 1,024 tokens"),
    # ---- Evaluation and inference
    "emocaliber eval --model ckpt/ --data data/vecbench/test.jsonl --image-root data/vecbench/images "
    "--out runs/eval/ckpt": Step("run", ("--max-new-tokens", "8"), "short answers from the untrained tiny model"),
    "python eval/run_vecbench.py --model ckpt/ --data data/vecbench/test.jsonl --image-root data/vecbench/images":
        Step("run", ("--max-new-tokens", "8"), "as above; resumes the predictions above (same --out by default)"),
    "emocaliber predict photo.jpg --model wudq/EmoCaliber --task EmoSet-8 --json":
        Step("run", ("--max-new-tokens", "8"), "wudq/EmoCaliber is a local directory holding the tiny model",
             unlabelled_ok=True),
    "emocaliber eval-emonet --help": Step("run"),
    "emocaliber serve --help": Step("run"),
}


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """(section, argv) of each command in the ```bash blocks of :data:`SECTIONS`, in README order."""
    commands, section, in_bash, pending = [], None, False, ""
    for line in text.splitlines():
        if line.startswith("## ") and not in_bash:
            section = line.strip()
        elif line.startswith("```"):
            in_bash = not in_bash and line.strip() == "```bash"
        elif in_bash and section in SECTIONS:
            pending += line
            if pending.rstrip().endswith("\\"):
                pending = pending.rstrip()[:-1] + " "
                continue
            argv = shlex.split(pending, comments=True)
            pending = ""
            if argv:
                commands.append((section, argv))
    return commands


def key(argv: list[str]) -> str:
    """A command as one line of its words (quotes dropped), the key of :data:`PLAN`."""
    return " ".join(argv)


def _miniature_checkout(root: Path, tiny_model: Path) -> None:
    """What a user has beside a clone before running the README: raw data, released files, a photo, a model."""
    for name in ("recipes", "eval", "data_prep"):
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    make_all(root / "raw")  # raw/FI, raw/EmoSet-118K, raw/WEBEmo, raw/testImages_abstract, ... as distributed
    released = {"conversations": [{"role": "user", "content": [
        {"type": "image", "image": IMAGE}, {"type": "text", "text": QUESTION}]}], "task": "EmoSet-8",
        "candidates": ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"],
        "ground_truth": "contentment"}
    test_file = root / "EmoCaliber" / "input_data" / "test_8k.jsonl"
    test_file.parent.mkdir(parents=True)
    test_file.write_text(json.dumps(released) + "\n", encoding="utf-8")
    write_image(root / "VECBench" / IMAGE, "contentment")
    stage1_row = _row("messages")
    stage1_row["messages"][1]["content"] = ANSWER.split("\n<confidence>")[0]  # stage 1 states no confidence
    for name, row in (("stage1_86k", stage1_row), ("stage2_43k_w_conf", _row("messages")),
                      ("stage3_14k", _row("messages"))):
        path = root / "VECBench" / "VEC-CoT" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    write_image(root / "photo.jpg", "photo")
    (root / "ckpt").symlink_to(tiny_model, target_is_directory=True)
    (root / "wudq").mkdir()
    (root / "wudq" / "EmoCaliber").symlink_to(tiny_model, target_is_directory=True)


def _run(argv: list[str]) -> int:
    """Run one command in this process as the shell would run it; returns its exit status."""
    from emocaliber import cli

    if argv[0] == "emocaliber":
        try:
            return cli.main(argv[1:])
        except SystemExit as e:  # argparse's --help and usage errors
            return int(e.code or 0)
    assert argv[0] == "python", argv
    saved = sys.argv
    try:
        if argv[1] == "-c":
            sys.argv = ["-c", *argv[3:]]
            # the README's own `python -c` code, run as python would run it
            exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
            return 0
        sys.argv = argv[1:]
        runpy.run_path(argv[1], run_name="__main__")
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = saved


def _parse_only(argv: list[str]) -> list[tuple]:
    """Parse a training command without training: its flags and YAML reach the dataclasses, nothing runs."""
    from emocaliber.train import grpo, sft

    calls: list[tuple] = []
    with pytest.MonkeyPatch.context() as mp:  # the recorder must not outlive this command
        mp.setattr(sft, "run_sft", lambda *a, **k: calls.append(("sft", *a)))
        mp.setattr(grpo, "run_grpo", lambda *a, **k: calls.append(("grpo", *a)))
        _parse_with_recorder(argv)
    return calls


def _parse_with_recorder(argv: list[str]) -> None:
    if argv[:2] == ["accelerate", "launch"]:
        from accelerate.commands.config.config_args import load_config_from_file
        from accelerate.commands.launch import launch_command_parser

        launch = launch_command_parser().parse_args(argv[2:])  # exits 2 on a flag accelerate does not know
        config = load_config_from_file(launch.config_file)
        assert config.distributed_type.value == "DEEPSPEED", launch.config_file
        assert Path(launch.training_script).is_file(), launch.training_script
        argv = ["python", launch.training_script, *launch.training_script_args]
    assert _run(argv) == 0, argv


def test_every_readme_command_is_classified():
    """A README command this test does not know fails it; so does a plan entry the README dropped."""
    found = [key(argv) for _, argv in readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert len(found) >= 15  # the parser found the blocks (guards against a heading rename emptying the list)
    unknown = [c for c in found if c not in PLAN]
    assert not unknown, "README commands without a decision in PLAN (run / run with overrides / parse):\n" + \
        "\n".join(unknown)
    stale = [c for c in PLAN if c not in found]
    assert not stale, "PLAN entries the README no longer has:\n" + "\n".join(stale)


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path, monkeypatch, capsys, tiny_model_dir):
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    unknown = [key(argv) for _, argv in commands if key(argv) not in PLAN]
    assert not unknown, f"unclassified README commands: {unknown}"
    _miniature_checkout(tmp_path, Path(tiny_model_dir))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    log = []
    for section, argv in commands:
        step = PLAN[key(argv)]
        full = [*argv, *step.extra]
        start = time.perf_counter()
        if step.mode == "parse":
            calls = _parse_only(full)
            capsys.readouterr()
            log.append(f"{time.perf_counter() - start:6.1f} s  parse   {shlex.join(full)}")
            assert len(calls) == 1, (section, full, calls)
            continue
        assert step.mode == "run", step
        code = _run(full)
        out, err = capsys.readouterr()
        log.append(f"{time.perf_counter() - start:6.1f} s  exit {code}  {shlex.join(full)}")
        if step.unlabelled_ok and code == 1:
            assert "names none of the candidates" in err, err
        else:
            assert code == 0, f"{section}: {shlex.join(full)} exited {code}\n{out[-2000:]}\n{err[-2000:]}"
        if "--help" in argv:
            assert "usage:" in out, out
        if argv[1] == "predict":
            (line,) = out.strip().splitlines()
            assert json.loads(line)["image"] == "photo.jpg"
    print("\n".join(log))  # seconds and exit status per command (pytest -rP shows it)
    # What the later commands read was written by the earlier ones, where the README says.
    for path in ("data/vecbench/test.jsonl", "data/vecbench/summary.md", "data/released/test.jsonl",
                 "data/released/stage2_43k_w_conf.jsonl", "data/synthemo/cot/stage1.jsonl",
                 "runs/tiny/base/config.json", "runs/tiny/stage1/model.safetensors",
                 "data/synthemo/cot/stage2.jsonl", "runs/eval/ckpt/report.md", "runs/eval/ckpt/metrics.json"):
        assert (tmp_path / path).is_file(), path
    assert not (tmp_path / "runs" / "qwen2.5-vl-7b").exists()  # parse-only created no run directory
