#!/usr/bin/env python
"""Stage 1 (scaffold model): SFT on structured reasoning + answer (`emocaliber train sft`).

  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml recipes/stage1_sft.py \\
      --config recipes/qwen2.5-vl-7b/stage1.yaml"""

import sys

from emocaliber.train.sft import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
