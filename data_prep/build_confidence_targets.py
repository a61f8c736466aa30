#!/usr/bin/env python
"""Give each stage-2 record a confidence target (`emocaliber prepare targets`); run with --help."""

import sys

from emocaliber.corpora import targets_main

if __name__ == "__main__":
    sys.exit(targets_main(sys.argv[1:]))
