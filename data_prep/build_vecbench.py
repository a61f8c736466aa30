#!/usr/bin/env python
"""Build VECBench from the six raw datasets (`emocaliber prepare vecbench`); run with --help."""

import sys

from emocaliber.vecbench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
