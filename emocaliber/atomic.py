"""Files that mark completion are written whole or not at all, and OS errors become one-line user errors.

A file that other code reads as "this is done" (a checkpoint's completion marker, a run's fingerprint, a report)
is written to a temporary name beside it, flushed, fsynced and renamed over the target: a kill or a full disk
leaves the previous version or nothing, never a truncated file that looks finished.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: What to do about the OS errors a user can fix, by errno.
_ADVICE = {
    errno.ENOSPC: "the disk is full; free space or choose another output location, then rerun",
    errno.EDQUOT: "the disk quota is exhausted; free space or choose another output location, then rerun",
    errno.EACCES: "permission denied; make the location writable or choose another one",
    errno.EPERM: "operation not permitted; make the location writable or choose another one",
    errno.EROFS: "the file system is read-only; choose another output location",
}


class OutputError(OSError):
    """An OS error while writing an output, told in one line naming the file and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def describe_os_error(error: OSError, path: str | os.PathLike | None = None) -> str:
    """One line: the file, the OS's reason and the remedy when it is one a user can apply."""
    where = path or error.filename or "output"
    advice = _ADVICE.get(error.errno or -1)
    reason = error.strerror or str(error)
    return f"cannot write {where}: {reason}" + (f"; {advice}" if advice else "")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; on an OS error remove the temporary file
    and raise :class:`OutputError` with a one-line message."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(e.errno, describe_os_error(e, target)) from e
