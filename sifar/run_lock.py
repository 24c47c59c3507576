"""One run per output folder: an OS lock held for as long as a run writes there.

Two training runs into one folder interleave their metrics and overwrite each other's checkpoints; two
shard runs of one split overwrite each other's shards and manifest. A run takes an exclusive POSIX record
lock (``fcntl.lockf``) on a small file in the folder and keeps it to the end. Such a lock belongs to the
process: the workers it forks do not inherit it, and the operating system releases it the moment the run's
own process ends, however it ends (``kill -9`` too), so a crashed run leaves no stale lock, even while its
orphaned workers wind down. (``flock`` would be inherited by forked workers and outlive a killed run.)
The file says who holds it (process, host, start time, command), for the second run's error.

The lock is advisory and, on network file systems, as good as their lock service: on a folder that
several nodes share, it is only as reliable as the file system's locking. (The standard library's ``fcntl``
is all this needs; a lock-file package would add a dependency for the same call.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator


class FolderInUseError(RuntimeError):
    """Another process holds the run lock of the folder."""


def holder_line() -> str:
    """Who this process is, as the lock file records it."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}: {' '.join(sys.argv)}"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, name: str, what: str) -> Iterator[Path]:
    """Hold ``<folder>/<name>`` locked for the block; FolderInUseError naming the holder when another
    process holds it. ``what`` names the run in the error ("training run", "shard run of split val").

    A process must not take the same lock twice: POSIX locks do not conflict within one process."""
    path = Path(folder) / name
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not written its name yet"
            raise FolderInUseError(f"{folder} is in use by another {what} ({holder}); wait for it to end or "
                                   f"choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(holder_line() + "\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the file releases the lock
