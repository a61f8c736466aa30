"""The ``emocaliber`` command: one entry for everything a user runs, each subcommand a ``main(argv)`` in the module
named for its concept (the pattern of TRL's ``trl/scripts``).

:data:`COMMANDS` maps a subcommand (one or two words) to ``"module:function"``; the module is imported only when
its command runs, so ``emocaliber --help`` answers at once, and adding a command is one line. The scripts under
``data_prep/``, ``recipes/`` and ``eval/`` call the same functions.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "prepare vecbench": "emocaliber.vecbench:main",
    "prepare released": "emocaliber.formats:main",
    "prepare webemo": "emocaliber.sources.webemo_download:main",
    "prepare synthemo": "emocaliber.synthemo:main",
    "prepare cot": "emocaliber.corpora:cot_main",
    "prepare targets": "emocaliber.corpora:targets_main",
    "prepare blends": "emocaliber.blends:main",
    "prepare pseudo-labels": "emocaliber.pseudo_labels:main",
    "prepare emonet": "emocaliber.emonet.corpus:main",
    "prepare holdout": "emocaliber.train.validation:holdout_main",
    "train sft": "emocaliber.train.sft:main",
    "train grpo": "emocaliber.train.grpo:main",
    "merge-lora": "emocaliber.train.checkpoint:main",
    "eval": "emocaliber.evaluation:main",
    "eval-blends": "emocaliber.blend_rank:main",
    "compare": "emocaliber.paired:main",
    "eval-emonet": "emocaliber.emonet.evaluate:main",
    "predict": "emocaliber.inference:main",
    "demo": "emocaliber.demo:main",
    "serve": "emocaliber.serve:main",
}

USAGE = """\
usage: emocaliber [--version] COMMAND [ARGS...]

EmoCaliber: which emotion does an image evoke, and how sure is the model?

commands:
{commands}

examples:
  emocaliber predict photo.jpg
  emocaliber eval --model ckpt/stage3 --data data/vecbench/test.jsonl --image-root data/vecbench/images
  emocaliber prepare synthemo --out data/synthemo
  emocaliber train sft --config recipes/tiny/stage1.yaml
  emocaliber demo --quick --out runs/demo-quick

Run 'emocaliber COMMAND --help' for a command's options.
"""


def usage() -> str:
    return USAGE.format(commands="\n".join(f"  {name}" for name in COMMANDS))


def resolve(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """The longest command name that starts ``argv``, and the arguments after it; None when there is none."""
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in COMMANDS:
            return name, list(argv[words:])
    return None


def load(name: str):
    """The entry point of a command (imports its module)."""
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        from emocaliber import __version__

        print(f"emocaliber {__version__}")
        return 0
    found = resolve(argv)
    if found is None:
        groups = sorted({n.split()[0] for n in COMMANDS if " " in n and n.split()[0] == argv[0]})
        hint = (f"'{argv[0]}' needs one of: {', '.join(n.split()[1] for n in COMMANDS if n.split()[0] in groups)}"
                if groups else f"unknown command {argv[0]!r}; choose from: {', '.join(COMMANDS)}")
        print(f"emocaliber: error: {hint} (see --help)", file=sys.stderr)
        return 2
    name, rest = found
    entry = load(name)
    prog = f"emocaliber {name}"
    code = entry(rest, prog=prog) if "prog" in inspect.signature(entry).parameters else entry(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
