#!/usr/bin/env python
"""Build SynthEmo, the embedded emotion world (`emocaliber prepare synthemo`); run with --help."""

import sys

from emocaliber.synthemo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
