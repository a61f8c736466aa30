#!/usr/bin/env python
"""Rerun a finished demo's stage 3 with changed settings, then evaluate it as the demo evaluates stage 3.

Why: every stage-3 trial in docs/demo.md is the demo's own GRPO step with a flag or two changed, trained from the
same stage 2, and then the demo's own stage-3 evaluation. Both commands are read from the run's done-markers
(``RUN/.done/stage3.json``, ``RUN/.done/eval-stage3.json``) and run in this process with the marker's torch thread
count, as the demo ran them, so a trial differs from the demo only in the flags given here (a flag given again
overrides the demo's). The variant's checkpoint and evaluation go to ``RUN/NAME/stage3`` and
``RUN/NAME/eval/stage3``; the run itself is left as it was. Run it from the directory the demo ran in: the
markers hold the demo's paths as it was given them.

``--greedy-prefix`` makes every rollout share the greedy reasoning and answer, so that a group's completions differ
only in the stated confidence (session 12's trial, docs/demo.md). It patches transformers' ``generate`` in this
process: a sampling call first decodes greedily, cuts each row after ``<confidence>`` and samples the rest from
there. It is a trial, not a recipe option: TRL 1.16's ``rollout_func`` drops a VLM's images, so doing it properly
means overriding the trainer's generation.

``--stage2 "FLAGS"`` first retrains stage 2 the demo's way with FLAGS added (its checkpoint and evaluation in
``RUN/NAME/stage2`` and ``RUN/NAME/eval/stage2``), and stage 3 then trains from that stage 2: for a change whose
effect on stage 3 goes through stage 2, such as stage 2's ``--confidence_loss_weight``.

Check the variant against issue 11's targets:
    python bench/demo_targets.py RUN --stage3 RUN/NAME/eval/stage3 [--stage2 RUN/NAME/eval/stage2]

Example: python bench/stage3_variant.py runs/e0 b64 -- --per_device_train_batch_size 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from emocaliber.demo import DemoError, code_digest, run_script
from emocaliber.train.credit import OPEN


def _marker(run: Path, step: str) -> dict:
    path = run / ".done" / f"{step}.json"
    try:
        marker = json.loads(path.read_text())
        return {"command": list(map(str, marker["command"])), "threads": int(marker["threads"]),
                "code": marker.get("code")}
    except FileNotFoundError:
        raise SystemExit(f"{path}: not found; {run} is not a finished demo run (python -m emocaliber.demo "
                         f"--out {run})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a demo done-marker ({e}); rerun the demo to rewrite it") from None


def run_as_demo(command: list[str], threads: int) -> None:
    """Run one of the demo's step commands in this process with the step's torch thread count, as the demo does;
    a failing step ends the script with its message."""
    import torch

    torch.set_num_threads(threads)
    print(f"python {' '.join(command)}", flush=True)
    try:
        run_script(command[0], command[1:])
    except DemoError as e:
        raise SystemExit(str(e)) from None


def _index(command: list[str], flag: str) -> int:
    """Where ``flag``'s value is in ``command``."""
    if flag not in command[:-1]:
        raise SystemExit(f"the demo's command {command[0]} has no {flag}; this script no longer matches the demo")
    return command.index(flag) + 1


def _replace(command: list[str], flag: str, value: str) -> list[str]:
    i = _index(command, flag)
    return [*command[:i], value, *command[i + 1:]]


def _evaluation(run: Path, stage: str, out: Path) -> list[str]:
    """The demo's evaluation command for ``stage``, evaluating ``out/stage`` into ``out/eval/stage``."""
    command = _marker(run, f"eval-{stage}")["command"]
    return _replace(_replace(command, "--model", str(out / stage)), "--out", str(out / "eval" / stage))


def variant_commands(run: Path, name: str, flags: list[str],
                     stage2_flags: list[str] | None = None) -> tuple[list[list[str]], int]:
    """The demo's stage-3 and stage-3 evaluation commands, writing under ``run/name`` and with ``flags`` added to
    the GRPO step, preceded, with ``stage2_flags``, by its stage-2 and stage-2 evaluation commands with those
    flags added to stage 2 (stage 3 then trains from the new stage 2); and the thread count they ran with."""
    train = _marker(run, "stage3")
    model = train["command"][_index(train["command"], "--model_name_or_path")]
    if not Path(model).is_dir():
        raise SystemExit(f"{model} (stage 2, from {run}/.done/stage3.json): not a directory; run this from the "
                         f"directory the demo ran in")
    if train["code"] != code_digest():
        print(f"note: the project's code changed since {run}'s stage 3 ran; the variant runs today's code")
    out, commands = run / name, []
    grpo = _replace(train["command"], "--output_dir", str(out / "stage3")) + flags
    if stage2_flags is not None:
        sft = _replace(_marker(run, "stage2")["command"], "--output_dir", str(out / "stage2")) + stage2_flags
        commands += [sft, _evaluation(run, "stage2", out)]
        grpo = _replace(grpo, "--model_name_or_path", str(out / "stage2"))
    return [*commands, grpo, _evaluation(run, "stage3", out)], train["threads"]


@contextlib.contextmanager
def greedy_prefix_rollouts(tokenizer) -> Iterator[None]:
    """Within: ``GenerationMixin.generate``'s sampling calls keep the greedy response up to ``<confidence>`` and
    sample only what follows; a call whose rows do not share one such prefix keeps its greedy rows (a flat group)."""
    import copy

    import torch
    from transformers import GenerationMixin

    generate = GenerationMixin.generate

    def prefix_length(ids: torch.Tensor) -> int | None:
        for k in range(1, len(ids) + 1):
            if tokenizer.decode(ids[:k], skip_special_tokens=True).endswith(OPEN):
                return k
        return None

    def patched(self, *args, generation_config=None, **kwargs):
        if generation_config is None or not generation_config.do_sample or "input_ids" not in kwargs:
            return generate(self, *args, generation_config=generation_config, **kwargs)
        greedy = copy.deepcopy(generation_config)
        greedy.do_sample, greedy.temperature, greedy.top_p, greedy.top_k, greedy.min_p = False, None, None, None, None
        out = generate(self, *args, generation_config=greedy, **kwargs)
        ids = kwargs["input_ids"]
        if out.shape[0] != ids.shape[0]:
            raise ValueError("--greedy-prefix needs one prompt row per completion, as TRL passes them; "
                             "num_return_sequences > 1 is not supported")
        completions = out[:, ids.shape[1]:]
        k = prefix_length(completions[0])
        if k is None or not all(torch.equal(completions[0, :k], row[:k]) for row in completions):
            return out
        extended = dict(kwargs, input_ids=torch.cat([ids, completions[:, :k]], 1))
        for key, value in kwargs.items():  # attention mask, mm_token_type_ids: the prefix is text
            if key != "input_ids" and torch.is_tensor(value) and value.shape == ids.shape:
                fill = torch.ones_like if key == "attention_mask" else torch.zeros_like
                extended[key] = torch.cat([value, fill(completions[:, :k])], 1)
        sample = copy.deepcopy(generation_config)
        sample.max_new_tokens = 16  # "0.xx</confidence>" and the end of the turn
        return generate(self, *args, generation_config=sample, **extended)

    GenerationMixin.generate = patched
    try:
        yield
    finally:
        GenerationMixin.generate = generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s [-h] [--greedy-prefix] [--stage2 FLAGS] run name "
                                      "[-- flags for stage3_grpo.py ...]")
    p.add_argument("run", type=Path, help="a finished demo run directory")
    p.add_argument("name", help="the variant's directory under RUN (letters, digits, '.', '_' and '-')")
    p.add_argument("--greedy-prefix", action="store_true",
                   help="rollouts share the greedy reasoning and answer; only the confidence is sampled")
    p.add_argument("--stage2", metavar="FLAGS", type=shlex.split,
                   help='retrain stage 2 with these flags for recipes/stage2_sft.py (one quoted string, e.g. '
                        '"--confidence_loss_weight 3") and train stage 3 from it')
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, flags = p.parse_args(argv[:cut]), argv[cut + 1:]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        p.error(f"name {args.name!r}: use a plain directory name (letters, digits, '.', '_' and '-')")
    if (args.run / args.name).exists():
        p.error(f"{args.run / args.name} exists; choose another name or delete it")
    commands, threads = variant_commands(args.run, args.name, flags, args.stage2)
    grpo = len(commands) - 2

    for i, command in enumerate(commands):
        rollouts = contextlib.nullcontext()
        if args.greedy_prefix and i == grpo:
            from transformers import AutoTokenizer

            model = command[_index(command, "--model_name_or_path")]
            rollouts = greedy_prefix_rollouts(AutoTokenizer.from_pretrained(model))
        with rollouts:
            run_as_demo(command, threads)
    stage2 = f" --stage2 {args.run / args.name / 'eval' / 'stage2'}" if args.stage2 is not None else ""
    print(f"check it: python bench/demo_targets.py {args.run} --stage3 {args.run / args.name / 'eval' / 'stage3'}"
          + stage2)


if __name__ == "__main__":
    main()
