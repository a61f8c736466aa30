#!/usr/bin/env python
"""Stage 1 (scaffold model): SFT on structured reasoning + answer, with TRL's SFTTrainer.

Every field of ModelArgs, DataArgs (emocaliber.train.configs) and TRL's SFTConfig can be set in the YAML file and
overridden on the command line as --field value. Examples (docs/training.md has more):

  # one process (CPU tiny model or one GPU)
  python recipes/stage1_sft.py --config recipes/tiny/stage1.yaml
  # one node with 8 GPUs, DeepSpeed ZeRO-3
  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage1_sft.py \\
      --config recipes/qwen2.5-vl-7b/stage1.yaml
  # continue a killed run from the last checkpoint in output_dir
  ... --resume_from_checkpoint auto
"""

import sys

from trl import SFTConfig, TrlParser

from emocaliber.train.configs import (
    DataArgs,
    HelpFormatter,
    ModelArgs,
    parse_args_and_config,
)
from emocaliber.train.errors import user_errors_exit
from emocaliber.train.sft import run_sft


def main(argv=None) -> None:
    parser = TrlParser((ModelArgs, DataArgs, SFTConfig), description=__doc__, formatter_class=HelpFormatter)
    parser.set_defaults(with_confidence=False)
    with user_errors_exit("stage1_sft.py"):
        model_args, data_args, training_args = parse_args_and_config(parser, argv)
        run_sft(model_args, data_args, training_args, stage="stage1")


if __name__ == "__main__":
    main(sys.argv[1:])
