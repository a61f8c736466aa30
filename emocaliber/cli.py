"""The ``emocaliber`` command: ``predict`` one or more images, ``eval`` a checkpoint on a test file.

Subcommands are entries of :data:`COMMANDS`; adding one (e.g. ``demo``) is one more :class:`Command` with a
function that adds its options and a function that runs it and returns the exit code. Heavy libraries are
imported inside the run functions, so ``emocaliber --help`` answers at once. Bad input (missing model, unreadable
file, unknown task, an image that will not load) ends with one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from emocaliber.argtypes import whole_number
from emocaliber.demo import __doc__ as DEMO_DESCRIPTION
from emocaliber.demo import add_demo_arguments, run_demo
from emocaliber.evaluation import EVAL_DESCRIPTION, EVAL_EPILOG, OneLineErrorParser, add_eval_arguments


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, long description, examples, options and runner."""

    name: str
    help: str
    description: str
    epilog: str
    add_arguments: Callable[[argparse.ArgumentParser], object]
    run: Callable[[argparse.Namespace, str], int]


PREDICT_DESCRIPTION = """\
Ask EmoCaliber which emotion an image evokes: it reasons in five steps, names one label from the candidates
and says how confident it is. Prints the label and confidence (or everything as JSON with --json).

Candidates come from --candidates (comma-separated) or from a task's label set (--task); with neither, the
eight Mikels emotions of EmoSet-8 are offered. Candidates exactly 'positive,negative' ask the sentiment question.
Images are local files; URLs are refused (nothing is downloaded except the model itself)."""

PREDICT_EPILOG = """\
examples:
  %(prog)s photo.jpg                                   # released model, the eight Mikels emotions
  %(prog)s photo.jpg --task WebEmo-7                   # that task's labels
  %(prog)s photo.jpg --candidates positive,negative    # sentiment
  %(prog)s a.jpg b.jpg --model ckpt/stage3 --json      # a local checkpoint, one JSON object per line
  %(prog)s photo.jpg --temperature 0.7                 # sample like the release's evaluation (default: greedy)

The first use of the default model downloads it from the Hugging Face hub (wudq/EmoCaliber, about 16 GB)."""


_positive_int = whole_number(1)


def _temperature(text: str) -> float:
    """A sampling temperature: a finite number >= 0, refused by the parser rather than after the model loads."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0 = greedy), got {text}")
    return value


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from emocaliber.inference import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODEL

    p = parser
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s): jpg, png, ...")
    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub id (default %(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", help="use this task's labels as candidates, e.g. FI-8, WebEmo-25, FI-2")
    which.add_argument("--candidates", metavar="A,B,C", help="comma-separated labels to choose from")
    p.add_argument("--json", action="store_true", help="print each prediction as one JSON object per line, with "
                                                       "the reasoning and the raw response")
    p.add_argument("--temperature", type=_temperature, default=0.0, help="0 = greedy (default %(default)s)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="longest response in tokens (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0 (default 0)")
    p.add_argument("--backend", choices=("transformers", "vllm", "auto"), default="transformers",
                   help="generation backend (default %(default)s)")
    p.add_argument("--device", help="torch device for the transformers backend, e.g. cuda:0 or cpu "
                                    "(default: the first GPU if any, else cpu)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                   help="weight dtype (default %(default)s: the checkpoint's)")
    p.add_argument("--min-pixels", type=_positive_int, help="image pixel lower bound (default: the checkpoint's "
                                                            "processor, which the release's evaluation used too)")
    p.add_argument("--max-pixels", type=_positive_int, help="image pixel upper bound (default: the checkpoint's "
                                                            "processor, which the release's evaluation used too)")
    p.add_argument("--parse-mode", choices=("strict", "emocaliber"), default="strict",
                   help="strict: the label only when the answer names one candidate; emocaliber: the original "
                        "evaluation's substring rules (default %(default)s)")
    return p


def run_predict(args: argparse.Namespace, prog: str) -> int:
    from emocaliber.inference import EmoCaliber, InputError, load_image, resolve_candidates
    from emocaliber.modeling import ModelNotFoundError

    try:
        # Inputs first: a typo in a task or a path should not wait for a 16 GB model to load.
        resolve_candidates(args.candidates, args.task)
        images = [load_image(path) for path in args.images]
        model = EmoCaliber.from_pretrained(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                                           min_pixels=args.min_pixels, max_pixels=args.max_pixels,
                                           parse_mode=args.parse_mode)
        predictions = model.predict_batch(images, candidates=args.candidates, task=args.task,
                                          temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                          seed=args.seed)
    except (ModelNotFoundError, InputError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    for path, pred in zip(args.images, predictions):
        if args.json:
            print(json.dumps({"image": path, **pred.to_dict()}, ensure_ascii=False))
        else:
            print(f"{path}\t{pred.summary()}")
    unlabelled = [(path, pred) for path, pred in zip(args.images, predictions) if pred.label is None]
    for path, pred in unlabelled:  # a confidence without a label from the list is no prediction at all
        print(f"{prog}: error: {path}: the model's answer names none of the candidates {pred.candidates} "
              f"({'; '.join(pred.problems) or 'no answer'})", file=sys.stderr)
    return 1 if unlabelled else 0


def run_eval(args: argparse.Namespace, prog: str) -> int:
    from emocaliber.evaluation import run_from_args

    return run_from_args(args, prog)


COMMANDS: list[Command] = [
    Command("predict", "label an image's emotion with a confidence", PREDICT_DESCRIPTION, PREDICT_EPILOG,
            add_predict_arguments, run_predict),
    Command("eval", "evaluate a checkpoint on VECBench or a records file", EVAL_DESCRIPTION, EVAL_EPILOG,
            add_eval_arguments, run_eval),
    Command("demo", "run the three-stage pipeline on SynthEmo with a tiny model (CPU)", DEMO_DESCRIPTION,
            "example: emocaliber demo --out runs/demo", add_demo_arguments, run_demo),
]


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="emocaliber", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="EmoCaliber: which emotion does an image evoke, and how sure is the model?",
        epilog="examples:\n  emocaliber predict photo.jpg\n"
               "  emocaliber eval --model ckpt/stage3 --data data/vecbench/test.jsonl\n\n"
               "Run 'emocaliber COMMAND --help' for a command's options.",
    )
    from emocaliber import __version__

    parser.add_argument("--version", action="version", version=f"emocaliber {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description, epilog=cmd.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args._run(args, f"{parser.prog} {args.command}")


if __name__ == "__main__":
    sys.exit(main())
