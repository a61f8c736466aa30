"""The 7B recipes and the training docs agree with the release, with TRL 1.16 and with each other.

Commands are read out of the docs and parsed with the recipes' own parser (TRL's ``GRPOConfig`` checks the batch
arithmetic), so a doc that would fail at config parsing fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from unittest.mock import PropertyMock, patch

import pytest
import yaml
from trl import GRPOConfig, SFTConfig, TrlParser

from emocaliber.train.configs import ConfigError, DataArgs, ModelArgs, parse_args_and_config
from emocaliber.train.grpo import GRPOScriptArgs

ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT / "recipes" / "qwen2.5-vl-7b"
#: Where the commands a user copies live.
COMMAND_SOURCES = ("README.md", "docs/training.md", "docs/grpo.md", "recipes/stage3_grpo.py",
                   "recipes/qwen2.5-vl-7b/stage3.yaml", "emocaliber/formats.py")


def _commands(text: str) -> list[str]:
    """Shell commands of a text, continuation lines joined, comment markers of YAML/docstrings removed."""
    lines = [re.sub(r"^\s*#\s?", "", line) if line.lstrip().startswith("#   ") else line
             for line in text.splitlines()]
    joined = "\n".join(lines).replace("\\\\\n", " ").replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def _all_commands(sources=COMMAND_SOURCES) -> list[tuple[str, str]]:
    return [(name, cmd) for name in sources for cmd in _commands((ROOT / name).read_text(encoding="utf-8"))]


def _grpo(argv: list[str], world_size: int = 8):
    parser = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig))
    with patch.object(GRPOConfig, "world_size", new_callable=PropertyMock, return_value=world_size):
        return parse_args_and_config(parser, argv)


def _server_mode_launches() -> list[str]:
    return [cmd for name, cmd in _all_commands(("docs/grpo.md",))
            if "accelerate launch" in cmd and "--vllm_mode server" in cmd]


def test_server_mode_commands_have_batch_settings_trl_accepts():
    """TRL refuses a generation batch (512) that per-device batch x processes does not divide; the release's
    optimizer step is 256 completions (32 prompts x 8)."""
    launches = _server_mode_launches()
    assert len(launches) >= 2, "docs/grpo.md shows a one-node and a multi-node server-mode launch"
    for cmd in launches:
        tokens = shlex.split(cmd[cmd.index("accelerate launch"):])
        processes = int(tokens[tokens.index("--num_processes") + 1])
        argv = tokens[tokens.index("recipes/stage3_grpo.py") + 1:]
        argv[argv.index("--config") + 1] = str(ROOT / argv[argv.index("--config") + 1])
        try:
            _, _, _, args = _grpo([*argv, "--use_cpu", "true"], world_size=processes)
        except ConfigError as e:
            pytest.fail(f"docs/grpo.md: {cmd}\nfails at config parsing: {e}")
        assert args.vllm_mode == "server" and args.generation_batch_size == 512, cmd
        assert args.per_device_train_batch_size * processes * args.gradient_accumulation_steps == 256, cmd


def test_a_process_count_that_does_not_divide_is_what_trl_refuses():
    """The check above can fail: 12 processes x 4 per device do not divide 512."""
    with pytest.raises(ConfigError, match="must be divisible by the global batch size"):
        _grpo(["--config", str(QWEN / "stage3.yaml"), "--use_cpu", "true"], world_size=12)


def test_the_vllm_server_is_started_with_trl_vllm_serve():
    """A hand-written `vllm serve` without --enable-scale-out answers 403 on the endpoints TRL uses for images."""
    text = (ROOT / "docs/grpo.md").read_text(encoding="utf-8")
    section = text[text.index("Server mode puts generation"):text.index("## What runs on CPU")]
    commands = _commands(section)
    assert sum(cmd.split("=")[-1].startswith("trl vllm-serve") or " trl vllm-serve " in f" {cmd} "
               for cmd in commands) >= 2
    hand_written = [cmd for cmd in commands if re.search(r"(^|\s)vllm serve\s", cmd)]
    assert all("--enable-scale-out" in cmd for cmd in hand_written), hand_written


def test_stage3_kl_is_verls_low_var_kl():
    """TRL 1.16 multiplies the KL by the importance ratio by default; verl's low_var_kl does not."""
    _, _, _, args = _grpo(["--config", str(QWEN / "stage3.yaml"), "--use_cpu", "true"])
    assert args.beta == 0.01 and args.use_bias_correction_kl is False
    row = next(line for line in (ROOT / "docs/grpo.md").read_text().splitlines() if "low_var_kl" in line)
    assert "use_bias_correction_kl: false" in row


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_sft_7b_configs_use_ms_swift_adam_beta2_marked_unverified(stage):
    parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
    _, _, args = parse_args_and_config(parser, ["--config", str(QWEN / f"{stage}.yaml"), "--use_cpu", "true",
                                                "--bf16", "false"])
    assert args.adam_beta2 == 0.95
    line = next(line for line in (QWEN / f"{stage}.yaml").read_text().splitlines() if line.startswith("adam_beta2"))
    assert "unverified" in line


def test_every_stage3_launch_uses_the_same_deepspeed_config():
    launches = [(name, cmd) for name, cmd in _all_commands()
                if "accelerate launch" in cmd and "stage3_grpo.py" in cmd and "qwen2.5-vl-7b/stage3.yaml" in cmd]
    assert {name for name, _ in launches} >= {"README.md", "docs/grpo.md", "recipes/stage3_grpo.py",
                                             "recipes/qwen2.5-vl-7b/stage3.yaml"}
    configs = {re.search(r"accelerate_configs/(\w+)\.yaml", cmd).group(1) for _, cmd in launches}
    assert configs == {"zero3"}, launches


def test_import_examples_import_every_file_the_7b_configs_read():
    configs = {stage: yaml.safe_load((QWEN / f"{stage}.yaml").read_text()) for stage in ("stage1", "stage2", "stage3")}
    read = {Path(c[key]).name for c in configs.values() for key in ("train_file", "val_file") if c.get(key)}
    assert read == {"stage1_86k.jsonl", "stage2_43k_w_conf.jsonl", "stage3_train.jsonl", "stage3_val.jsonl"}
    # stage 3's training and validation files are the 14k file split by image, with the command docs/grpo.md gives
    (holdout,) = [cmd for name, cmd in _all_commands() if name == "docs/grpo.md"
                  and cmd.startswith("emocaliber prepare holdout --records")]
    tokens = shlex.split(holdout)
    assert [Path(tokens[tokens.index(flag) + 1]) for flag in ("--records", "--train", "--val")] == [
        Path("data/released/stage3_14k.jsonl"), Path(configs["stage3"]["train_file"]),
        Path(configs["stage3"]["val_file"])]
    wanted = {"stage1_86k.jsonl", "stage2_43k_w_conf.jsonl", "stage3_14k.jsonl"}
    examples = [(name, cmd) for name, cmd in _all_commands()
                if "import_released.py import" in cmd or "prepare released import" in cmd]
    assert {name for name, _ in examples} >= {"docs/training.md", "emocaliber/formats.py", "README.md"}
    for name, cmd in examples:
        tokens = shlex.split(cmd)
        imported = {Path(tokens[i + 1]).name for i, t in enumerate(tokens) if t == "--cot"}
        assert tokens[tokens.index("--out") + 1] == "data/released" and imported == wanted, (name, cmd)
        assert tokens[tokens.index("--test") + 1] == "EmoCaliber/input_data/test_8k.jsonl", (name, cmd)


@pytest.mark.parametrize("doc", ["docs/training.md", "docs/evaluation.md"])
def test_docs_say_where_the_released_files_come_from(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for name in ("wudq/VECBench", "wdqqdw/EmoCaliber", "input_data/test_8k.jsonl"):
        assert name in text, (doc, name)


def test_no_claim_that_the_release_evaluated_at_its_sft_pixel_bounds():
    """The release's inference_vllm.py gives 200704-451584 only to the processor that renders the prompt text;
    vLLM used the checkpoint's saved bounds."""
    claim = re.compile(r"release\S*\s+(?:evaluated|used)\b[^.]{0,40}?(?:200704|451584)")
    files = [p for p in (*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("emocaliber/**/*.py"),
                         *ROOT.glob("eval/*.py"))]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in claim.finditer(p.read_text())]
    assert not found, found
    from emocaliber.evaluation import EVAL_EPILOG

    for text in (EVAL_EPILOG, (ROOT / "docs/evaluation.md").read_text()):
        example = next(cmd for cmd in _commands(text[text.index("the release's protocol"):])
                       if "--model wudq/EmoCaliber" in cmd)
        assert "--min-pixels" not in example and "test_8k.jsonl" in example, example
