#!/usr/bin/env python
"""Build SynthEmo, the embedded emotion world whose best achievable confidence is known for every image.

Writes under --out: images/ (PNG), train.jsonl and test.jsonl (VECBench-style records), stage1.jsonl (train
records with teacher reasoning), stage3.jsonl (train prompts without reasoning), summary.json and summary.md
(counts and the oracle's accuracy and ECE per split and task). The same options always give the same bytes.

Example: python data_prep/make_synthemo.py --out data/synthemo --n-train 4000 --n-test 500 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from emocaliber import synthemo
from emocaliber.argtypes import float_pair, whole_number
from emocaliber.tasks import canonical_task_name


class _Parser(argparse.ArgumentParser):
    """Errors as one line (no usage block), so the reason is what the user sees."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _task(text: str) -> str:
    try:
        name = canonical_task_name(text)
    except KeyError:
        name = text
    if name not in synthemo.TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose from {', '.join(synthemo.TASKS)}")
    return name


def _confusions(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        a, sep, b = item.partition(":")
        if not sep or a not in synthemo.EMOTIONS or b not in synthemo.EMOTIONS:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not EMOTION:PARTNER with both from {', '.join(synthemo.EMOTIONS)}")
        pairs.append((a, b))
    return tuple(pairs)


def build_parser() -> argparse.ArgumentParser:
    d = synthemo.WorldConfig()
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path,
                   help="output root (created if missing; existing files are overwritten)")
    p.add_argument("--n-train", type=whole_number(0), default=d.n_train, help="training images (default %(default)s)")
    p.add_argument("--n-test", type=whole_number(0), default=d.n_test,
                   help="in-distribution test images (default %(default)s)")
    p.add_argument("--n-ood", type=whole_number(0), default=None,
                   help="SynthEmo-OOD-8 test images (default: same as --n-test)")
    p.add_argument("--seed", type=whole_number(0), default=d.seed,
                   help="random seed; the same seed and options give the same bytes (default %(default)s)")
    p.add_argument("--tasks", nargs="+", type=_task, default=list(d.tasks), metavar="TASK",
                   help=f"tasks to build, any of {', '.join(synthemo.TASKS)} (default: all). SynthEmo-8 and "
                        "SynthEmo-2 share images; SynthEmo-OOD-8 is test only")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help="square image side in pixels, 28-512; the tiny model takes 56-112 "
                        "(default %(default)s)")
    p.add_argument("--mix-fraction", type=float, default=d.mix_fraction,
                   help="fraction of images blending two prototypes (default %(default)s)")
    p.add_argument("--label-noise", type=float, default=d.label_noise,
                   help="probability that a label is replaced by a uniform draw over the eight emotions, so "
                        "pure images are not certain either (default %(default)s)")
    p.add_argument("--w-min", type=float, default=d.w_min,
                   help="smallest weight of the heavier prototype in a mixture, >= 0.5 (default %(default)s)")
    p.add_argument("--w-max", type=float, default=d.w_max,
                   help="largest weight of the heavier prototype in a mixture, < 1 (default %(default)s)")
    p.add_argument("--confusions", type=_confusions, default=d.confusions, metavar="E:P,...",
                   help="confusable classes: every image of emotion E is a blend with partner P, for example "
                        "awe:fear,fear:awe (default: none)")
    p.add_argument("--confusion-w", type=float_pair("0.55,0.7"), default=(d.confusion_w_min, d.confusion_w_max),
                   metavar="MIN,MAX", help="weight range of E in those blends (default %(default)s)")
    p.add_argument("--stage1-label", choices=("drawn", "oracle"), default=d.stage1_label,
                   help="ground truth of stage1.jsonl: the drawn label (keeps the ambiguity that a sampled "
                        "stage-1 model must reproduce) or the oracle label (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _check_writable(parser: argparse.ArgumentParser, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as e:
        parser.error(f"cannot write to output directory {out}: {e.strerror or e}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = synthemo.WorldConfig(
        n_train=args.n_train, n_test=args.n_test, n_ood=args.n_ood, seed=args.seed,
        tasks=tuple(dict.fromkeys(args.tasks)), image_size=args.image_size, mix_fraction=args.mix_fraction,
        label_noise=args.label_noise, w_min=args.w_min, w_max=args.w_max, stage1_label=args.stage1_label,
        confusions=args.confusions, confusion_w_min=args.confusion_w[0], confusion_w_max=args.confusion_w[1],
    )
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    _check_writable(parser, args.out)
    summary = synthemo.build_world(args.out, cfg, progress=not args.no_progress and sys.stderr.isatty())
    for key, s in summary["splits"].items():
        print(f"{key}: n={s['n']} oracle accuracy={s['accuracy']:.4f} oracle ECE={s['ece']:.4f} "
              f"mean oracle confidence={s['mean_confidence']:.4f}")
    print(f"wrote {os.fspath(args.out)}/{{train,test,stage1,stage3}}.jsonl, images/ and summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
