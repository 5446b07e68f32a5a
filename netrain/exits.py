"""Ending a process that has finished its work without the interpreter's teardown.

A process that has imported TensorFlow spends about 1.9 s after its last statement tearing
its modules and their C++ state down; one that has imported MLflow, about 1.2 s. For a short
array task that is a sixth of its time, paid by every task. The work is done by then: every
file was written and renamed, the journal synced, the output flushed. So the process entry
points (a task's training process, its launcher, the shipper, ``netrain`` itself) end with
:func:`exit_now`, which does what a normal exit does that matters (waits for the threads a
normal exit waits for, runs the ``atexit`` handlers, flushes the standard streams) and then
leaves at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def exit_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives (a message is printed to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object = 0) -> NoReturn:
    """End the process with ``code`` as ``sys.exit`` would, without the teardown."""
    status = exit_code(code)
    main = threading.main_thread()
    for t in threading.enumerate():  # as the interpreter does: non-daemon threads finish
        if t is not main and t is not threading.current_thread() and not t.daemon:
            t.join()
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()  # logging.shutdown among them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
