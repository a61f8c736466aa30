"""``python -m emocaliber.serve``: the same as ``emocaliber serve``."""

import sys

from emocaliber.serve import main

sys.exit(main())
