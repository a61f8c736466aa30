#!/usr/bin/env python
"""Merge a LoRA/QLoRA adapter (a stage's output_dir or checkpoint-N) into its base and save a full checkpoint.

  python recipes/merge_lora.py --adapter runs/tiny/stage1-lora --out runs/tiny/stage1-merged

The result loads with from_pretrained, vLLM and eval/run_vecbench.py, and can be the next stage's
model_name_or_path. A QLoRA adapter is merged into the full-precision base.
"""

import argparse
import sys

from emocaliber.train.checkpoint import merge_lora
from emocaliber.train.configs import DTYPES
from emocaliber.train.errors import user_errors_exit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="directory with adapter_config.json")
    parser.add_argument("--out", required=True, help="output directory for the merged checkpoint")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype to load the base in (default: auto)")
    args = parser.parse_args(argv)
    with user_errors_exit("merge_lora.py"):
        out = merge_lora(args.adapter, args.out, dtype=args.dtype)
    print(f"merged checkpoint written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
