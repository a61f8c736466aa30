#!/usr/bin/env python
"""Import the released VECBench / VEC-CoT files as records, or export records (`emocaliber prepare released`); run with --help."""

import sys

from emocaliber.formats import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
