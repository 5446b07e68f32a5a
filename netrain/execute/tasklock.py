"""One process trains a task at a time: the lock file beside its journal, taken by the task
(TaskLock) and probed by heal (held)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class TaskLock:
    """The task's lock, held for the life of its process (the kernel drops it when the
    process ends, however it ends)."""

    def __init__(self, journal: Path) -> None:
        self.path = lock_path(journal)
        self.fd = -1
        #: who holds it, when ``take`` found it taken ("unknown" if they did not say)
        self.holder = ""

    def take(self) -> bool:
        """Take it and write who holds it; False when another process has it (a requeue
        racing a task that is still stopping, a rerun while it runs)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() \
                or "unknown"
            return False
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        return True


def held(journal: Path) -> bool:
    """Whether a process holds the task whose journal this is."""
    try:
        fd = os.open(lock_path(journal), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock we took
    return False
