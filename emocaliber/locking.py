"""An advisory lock on an output directory, so two runs never write into the same one at once.

Two evaluations into the same ``--out`` would both append to predictions.jsonl and leave duplicate rows; two
trainings into one ``output_dir`` would overwrite each other's checkpoints. The lock is ``flock`` on a file in the
directory: the kernel releases it when the holder exits, even when killed, so a stale lock cannot block a resume.
The file holds the holder's PID, which the error names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".emocaliber.lock"


class LockedError(RuntimeError):
    """Another live process is writing into the directory."""


class DirectoryLock:
    """Holds ``flock`` on ``<directory>/<name>`` (default ``.emocaliber.lock``) until :meth:`release` (or process
    exit). A file written by resumable appends takes its own lock name, e.g. ``.samples.jsonl.lock``."""

    def __init__(self, directory: str | os.PathLike, name: str = LOCK_FILE):
        self.path = Path(directory) / name
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.path.parent} is being written by another run (PID {holder}, lock "
                              f"{self.path}); wait for it to finish or choose another output directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked(directory: str | os.PathLike, name: str = LOCK_FILE) -> Iterator[DirectoryLock]:
    """Hold the directory's lock for the ``with`` block; raise :class:`LockedError` naming the holder's PID."""
    lock = DirectoryLock(directory, name).acquire()
    try:
        yield lock
    finally:
        lock.release()
