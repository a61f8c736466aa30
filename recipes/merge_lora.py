#!/usr/bin/env python
"""Merge a LoRA/QLoRA adapter into its base (`emocaliber merge-lora`); run with --help."""

import sys

from emocaliber.train.checkpoint import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
