#!/usr/bin/env python
"""Evaluate a checkpoint on EmoNet-Face HQ as one more expert annotator (release metrics + calibration).

All logic is in emocaliber.emonet.evaluate; run with --help for the inputs, outputs and examples, and see
docs/emonet_face.md for where the release files come from.
"""

import sys

from emocaliber.emonet.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
