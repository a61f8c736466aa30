#!/usr/bin/env python
"""Stage 3 (EmoCaliber): GRPO with a calibration reward, from the stage-2 (cold-start) checkpoint.

Every field of ModelArgs, DataArgs (emocaliber.train.configs), GRPOScriptArgs (emocaliber.train.grpo) and TRL's
GRPOConfig can be set in the YAML file and overridden on the command line as --field value. The settings mapping
from the release's verl script is in docs/grpo.md. Examples:

  python recipes/stage3_grpo.py --config recipes/tiny/stage3.yaml
  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage3_grpo.py \\
      --config recipes/qwen2.5-vl-7b/stage3.yaml --model_name_or_path runs/qwen2.5-vl-7b/stage2
"""

import sys

from trl import GRPOConfig, TrlParser

from emocaliber.train.configs import DataArgs, ModelArgs, parse_args_and_config
from emocaliber.train.errors import user_errors_exit
from emocaliber.train.grpo import GRPOScriptArgs, run_grpo


def main(argv=None) -> None:
    parser = TrlParser((ModelArgs, DataArgs, GRPOScriptArgs, GRPOConfig))
    parser.set_defaults(with_confidence=True)
    with user_errors_exit("stage3_grpo.py"):
        model_args, data_args, script_args, training_args = parse_args_and_config(parser, argv)
        run_grpo(model_args, data_args, script_args, training_args)


if __name__ == "__main__":
    main(sys.argv[1:])
