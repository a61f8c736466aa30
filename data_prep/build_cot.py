#!/usr/bin/env python
"""Build the structured chain-of-thought corpus (`emocaliber prepare cot`); run with --help."""

import sys

from emocaliber.corpora import cot_main

if __name__ == "__main__":
    sys.exit(cot_main(sys.argv[1:]))
