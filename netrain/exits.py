"""Ending a process that has finished its work without the interpreter's teardown.

A process that has imported TensorFlow spends about 1.9 s after its last statement tearing
its modules and their C++ state down; one that has imported MLflow, about 1.2 s. For a short
array task that is a sixth of its time, paid by every task. The work is done by then: every
file was written and renamed, the journal synced, the output flushed. So the process entry
points (a task's training process, its launcher, the shipper, ``netrain`` itself) end with
:func:`exit_now`, which does what a normal exit does that matters (tells thread pools to
stop, waits for the threads a normal exit waits for, runs the ``atexit`` handlers, flushes the
standard streams) and then leaves at once.

After an error (a status other than 0) the threads get :data:`ERROR_GRACE` seconds, not
forever: a thread blocked on a child process, a lock or a socket must not keep a failed
process alive (``netrain run`` hung this way after a full disk).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from netrain import env as names

#: Seconds the remaining threads get to finish when the process ends after an error
#: (NETRAIN_EXIT_GRACE overrides it).
ERROR_GRACE = 5.0


def error_grace() -> float:
    try:
        return max(0.0, float(os.environ.get(names.EXIT_GRACE, ERROR_GRACE)))
    except ValueError:
        return ERROR_GRACE


def exit_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives (a message is printed to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _stop_thread_pools() -> threading.Thread:
    """Run what the interpreter runs first at its exit, before it joins threads: the hooks
    registered with ``threading._register_atexit`` (concurrent.futures' pools put their
    idle workers' wake-up there). Without them an idle pool worker waits forever. They join
    their workers themselves, so they run in a thread of their own that the caller may stop
    waiting for."""
    hooks = list(getattr(threading, "_threading_atexits", []))

    def run() -> None:
        for hook in reversed(hooks):
            with contextlib.suppress(Exception):
                hook()

    t = threading.Thread(target=run, name="netrain-exit", daemon=True)
    t.start()
    return t


def exit_now(code: object = 0) -> NoReturn:
    """End the process with ``code`` as ``sys.exit`` would, without the teardown; after an
    error, threads still running after error_grace() seconds are left behind."""
    status = exit_code(code)
    deadline = None if status == 0 else time.monotonic() + error_grace()

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    _stop_thread_pools().join(left())
    main = threading.main_thread()
    for t in threading.enumerate():  # as the interpreter does: non-daemon threads finish
        if t is not main and t is not threading.current_thread() and not t.daemon:
            t.join(left())
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()  # logging.shutdown among them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def run_main(main: Callable[[], object], prog: str = "netrain") -> NoReturn:
    """Run a process's ``main`` and end with :func:`exit_now`, whatever it raised: an
    exception that escapes is one line on stderr and status 1 (a traceback would end in
    the interpreter's own exit, which waits for every thread)."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    except BaseException as exc:  # the last line of defence of a process
        text = " ".join(str(exc).split())
        if os.environ.get(names.DEBUG) == "1":
            import traceback

            traceback.print_exc()
        print(f"{prog}: error: {type(exc).__name__}: {text}", file=sys.stderr)
        code = 1
    exit_now(code)
