#!/usr/bin/env python
"""Download the WebEmo images into a local cache (`emocaliber prepare webemo`); run with --help."""

import sys

from emocaliber.sources.webemo_download import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
