"""An OS file lock on a run directory, held for the duration of a command.

The lock is ``fcntl.flock`` on ``RUN_DIR/.lock``: the kernel releases it when the process exits,
even on ``kill -9``, so a crashed run never leaves a stale lock behind. The file also records who
holds it, for the message the next command prints.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class RunDirBusyError(RuntimeError):
    """Raised when another process holds the run directory's lock."""


class RunDirLock:
    """Exclusive, non-blocking lock on a directory.

    Example:
        >>> import tempfile
        >>> with RunDirLock(Path(tempfile.mkdtemp())):
        ...     pass
    """

    def __init__(self, run_dir: Path, what: str = "run directory") -> None:
        self.run_dir = Path(run_dir)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusyError(
                f"The {self.what} {str(self.run_dir)!r} is in use by process {holder}. Wait for "
                "it to finish, or use another --run-dir."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            os.close(fd)  # e.g. a full disk: release the lock, report the error
            raise
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "(unknown)"
    if not info:
        return "(unknown)"
    return f"{info.get('pid')} on {info.get('host')} ({info.get('command')!r}, since {info.get('since')})"
