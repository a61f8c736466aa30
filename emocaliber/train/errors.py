"""How the training entry points end on a mistake a user can fix: one ``error:`` line and exit code 2.

Separate from :mod:`emocaliber.train.configs` because it names the errors of every layer below the entry points
(configuration, data, model lookup); configs itself sits below the data module.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from emocaliber.modeling import ModelNotFoundError
from emocaliber.train.configs import ConfigError
from emocaliber.train.data import DataError


@contextlib.contextmanager
def user_errors_exit(prog: str | None = None) -> Iterator[None]:
    """Turn errors a user can fix (bad config, missing data or model) into one ``error:`` line and exit code 2.

    Programming errors keep their traceback. Used around parsing and the run of every training entry point.
    """
    try:
        yield
    except (ConfigError, DataError, ModelNotFoundError, FileNotFoundError) as e:
        print(f"{prog or sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(2)
