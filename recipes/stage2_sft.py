#!/usr/bin/env python
"""Stage 2 (cold-start model): SFT on structured reasoning + answer + <confidence>, from the stage-1 checkpoint.

Every record needs a confidence target (data_prep/build_confidence_targets.py writes them). Every field of
ModelArgs, DataArgs (emocaliber.train.configs) and TRL's SFTConfig can be set in the YAML file and overridden on
the command line as --field value. Examples (docs/training.md has more):

  python recipes/stage2_sft.py --config recipes/tiny/stage2.yaml
  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage2_sft.py \\
      --config recipes/qwen2.5-vl-7b/stage2.yaml --model_name_or_path runs/qwen2.5-vl-7b/stage1
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
    parser.set_defaults(with_confidence=True)
    with user_errors_exit("stage2_sft.py"):
        model_args, data_args, training_args = parse_args_and_config(parser, argv)
        run_sft(model_args, data_args, training_args, stage="stage2")


if __name__ == "__main__":
    main(sys.argv[1:])
