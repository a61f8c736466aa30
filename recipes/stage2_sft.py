#!/usr/bin/env python
"""Stage 2 (cold-start model): the same SFT entry point as stage 1; the config sets with_confidence: true.

  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage2_sft.py \\
      --config recipes/qwen2.5-vl-7b/stage2.yaml --model_name_or_path runs/qwen2.5-vl-7b/stage1"""

import sys

from emocaliber.train.sft import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
