#!/usr/bin/env python
"""Stage 3 (EmoCaliber): GRPO with a calibration reward (`emocaliber train grpo`).

  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage3_grpo.py \\
      --config recipes/qwen2.5-vl-7b/stage3.yaml --model_name_or_path runs/qwen2.5-vl-7b/stage2"""

import sys

from emocaliber.train.grpo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
