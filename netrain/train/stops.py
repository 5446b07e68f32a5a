"""How a task stops before its end: the signals it notes (training then stops where a
checkpoint resumes exactly) and the writes that cannot succeed (a full disk, a quota, a
read-only filesystem); either way its networks keep their checkpoints, resumable."""

from __future__ import annotations

import contextlib
import errno
import signal
from pathlib import Path
from typing import Any

from netrain.errors import TaskInterrupted, note_interrupt, pending_interrupt

#: errno values of a write that cannot succeed until someone makes room or access
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def storage_error(exc: BaseException | None) -> OSError | None:
    """The OSError of a full disk, a quota or a read-only filesystem behind ``exc`` (Keras
    and h5py wrap it), if that is what ``exc`` is."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return exc
        if isinstance(exc, OSError) and "No space left on device" in str(exc):
            return exc  # h5py's own OSError carries no errno
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def storage_line(err: OSError) -> str:
    """One line: what could not be written, where, and the free space there."""
    from netrain.define.batch import free_space

    where = str(err.filename) if err.filename else ""
    reason = err.strerror or str(err)
    full = err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in reason
    if full and "free in" not in reason:  # no file named (h5py): the batch, our cwd
        reason += free_space(Path(where) if where else Path.cwd() / "-")
    return f"cannot write {where}: {reason}" if where else f"cannot write: {reason}"


class StorageFailed(TaskInterrupted):
    """A write of the task's files failed (full disk, quota, read-only): the task stops as
    on a signal, its networks keep their last checkpoints and resume at the next run."""

    def __init__(self, err: OSError) -> None:
        BaseException.__init__(self, storage_line(err))
        self.signum = 0
        self.line = storage_line(err)


#: The exit status of a task stopped by a failed write (full disk...): EX_TEMPFAIL.
STORAGE_EXIT = 75


#: The handlers the user's code had installed before the task's (called after ours).
_USER_HANDLERS: dict[int, Any] = {}


def _note_signal(signum: int, frame: Any) -> None:
    """Only remember the signal: training stops where a checkpoint resumes exactly. A handler the
    user's own code had installed is called too (ours only sets a flag)."""
    if pending_interrupt() is None:
        note_interrupt(signum)
    user = _USER_HANDLERS.get(signum)
    if callable(user) and user is not signal.default_int_handler:
        user(signum, frame)


def install_signal_handlers() -> dict[int, Any]:
    old: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        with contextlib.suppress(ValueError):  # not the main thread
            old[sig] = signal.signal(sig, _note_signal)
            _USER_HANDLERS[sig] = old[sig]
    return old


def restore_signal_handlers(old: dict[int, Any]) -> None:
    _USER_HANDLERS.clear()
    for sig, handler in old.items():
        with contextlib.suppress(ValueError):
            signal.signal(sig, handler)
