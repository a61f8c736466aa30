#!/usr/bin/env python
"""EmoNet-Face binary.csv -> yes/no verification training records (hard labels and soft confidence targets).

All logic is in emocaliber.emonet.corpus; run with --help for the options. Example:
  python data_prep/build_emonet_verification.py --binary data/emonet/binary.csv --out data/emonet/verify.jsonl
"""

import sys

from emocaliber.emonet.corpus import main

if __name__ == "__main__":
    sys.exit(main(prog="build_emonet_verification.py"))
