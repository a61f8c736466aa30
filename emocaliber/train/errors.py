"""How the training entry points end on a mistake a user can fix: one ``error:`` line and exit code 2.

Separate from :mod:`emocaliber.train.configs` because it names the errors of every layer below the entry points
(configuration, data, model lookup); configs itself sits below the data module.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator

from emocaliber.atomic import OutputError, describe_os_error
from emocaliber.locking import LockedError
from emocaliber.modeling import ModelNotFoundError
from emocaliber.train.configs import ConfigError
from emocaliber.train.data import DataError
from emocaliber.weights import CorruptWeightsError

#: OS errors a user fixes (disk full, permissions): one line naming the file and the remedy. A checkpoint a full
#: disk cut short is not marked complete, so a resume skips it.
_USER_FIXABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def user_errors_exit(prog: str | None = None) -> Iterator[None]:
    """Turn errors a user can fix (bad config, missing data or model) into one ``error:`` line and exit code 2.

    Programming errors keep their traceback. Used around parsing and the run of every training entry point.
    """
    try:
        yield
    except (ConfigError, DataError, ModelNotFoundError, FileNotFoundError, LockedError, OutputError,
            CorruptWeightsError) as e:
        print(f"{prog or sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in _USER_FIXABLE_ERRNOS:
            raise
        print(f"{prog or sys.argv[0]}: error: {describe_os_error(e)}", file=sys.stderr)
        sys.exit(2)
