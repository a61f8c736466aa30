#!/usr/bin/env python
"""Evaluate a checkpoint on VECBench (or any records file); the same as `emocaliber eval`.

All logic is in emocaliber.evaluation; run with --help for the options and examples.
"""

import sys

from emocaliber.evaluation import main

if __name__ == "__main__":
    sys.exit(main(prog="run_vecbench.py"))
