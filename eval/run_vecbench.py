#!/usr/bin/env python
"""Evaluate a checkpoint on VECBench or any records file (`emocaliber eval`); run with --help."""

import sys

from emocaliber.evaluation import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="run_vecbench.py"))
