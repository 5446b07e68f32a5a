"""How a shipper retries an MLflow call: exponential backoff with jitter while the error is
transient, and when it stops trying (its deadline, failing too long, or another journal
found tracking unreachable)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from netrain.track.plan import settings

#: an INTERNAL_ERROR (or a database error passed on as BAD_REQUEST) is retried this often
INTERNAL_RETRIES = 10


class GiveUp(Exception):
    """Stop shipping now (deadline passed, or tracking down for too long); the state file
    keeps the last shipped offset, so `netrain sync` continues from there."""


class Retry:
    """The retry policy of one shipper, shared by the threads that ship its runs.

    ``deadline`` is a time.monotonic() value (or None). A follower's ``watch`` (the writer's
    liveness check) is asked while a call is retried: once the writer is gone, the drain
    deadline starts (``writer_gone``), so a writer that dies while tracking is down does
    not leave its follower retrying forever."""

    def __init__(self, deadline: float | None = None, give_up_after: float | None = None,
                 stop: threading.Event | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.deadline = deadline
        self.give_up_after = give_up_after
        #: set by whoever ships the batch's other journals when one of them found tracking
        #: unreachable: this one then gives up at its next failure instead of retrying
        self.stop = stop
        self.log = log or (lambda text: None)
        self.watch: Callable[[], bool] | None = None
        #: seconds to keep going once the watched writer is gone (None: no drain deadline)
        self.drain: float | None = None
        self.warned_down = False
        #: calls that may have reached the server (answered, or failed after it was sent)
        self.reached = 0
        self._failing_since: float | None = None
        knobs = settings()  # read once: call() runs for every MLflow request
        self._backoff, self._backoff_max = knobs.backoff, knobs.backoff_max

    def writer_gone(self) -> None:
        """The writer ended: the drain deadline starts now (once)."""
        if self.deadline is None and self.drain is not None:
            self.deadline = time.monotonic() + self.drain

    def _look_at_writer(self) -> None:
        if self.deadline is None and self.watch is not None and not self.watch():
            self.writer_gone()

    def expired(self) -> bool:
        """The deadline passed (read only)."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def should_stop(self) -> bool:
        """Stop now: another journal found tracking down while this one fails too, or the
        deadline passed (the writer is looked at first: its end starts the drain)."""
        if self.stop is not None and self.stop.is_set() and self.warned_down:
            return True
        self._look_at_writer()
        return self.expired()

    def saw(self, exc: BaseException | None) -> None:
        """Count a call that may have reached the server: ``exc`` None (answered) or an
        error other than nobody listening."""
        from netrain.track import mlflow_ship

        if exc is None or not mlflow_ship.never_arrived(exc):
            self.reached += 1

    def failing_for(self) -> float:
        """Seconds the call now being retried has been failing (0 when none is)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def call(self, what: str, fn: Callable[[], Any], remote: bool = True) -> Any:
        """fn(), retried with exponential backoff and jitter while the error is transient.
        A permanent error is raised at once; GiveUp when the deadline or give_up_after
        passes first. ``remote``: fn sends a request (counted in ``reached``)."""
        from netrain.track import mlflow_ship

        attempt = 0
        first_failure: float | None = None
        base, cap = self._backoff, self._backoff_max
        while True:
            try:
                result = fn()
                if remote:
                    self.saw(None)
                self._failing_since = None
                if self.warned_down:
                    self.warned_down = False
                    self.log("tracking reachable again: shipping")
                return result
            except Exception as exc:
                if remote:
                    self.saw(exc)
                transient = mlflow_ship.is_transient(exc)
                if not transient and not (mlflow_ship.is_internal(exc)
                                          and attempt < INTERNAL_RETRIES):
                    raise
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                self._failing_since = first_failure
                if not self.warned_down:
                    self.warned_down = True
                    self.log(f"cannot {what} ({mlflow_ship.describe(exc)}): retrying; "
                             "training is not affected")
                if self.stop is not None and self.stop.is_set():
                    raise GiveUp(f"tracking unreachable: {mlflow_ship.describe(exc)}") from None
                if self.should_stop():
                    raise GiveUp(f"deadline passed while tracking failed: "
                                 f"{mlflow_ship.describe(exc)}") from None
                if self.give_up_after is not None and now - first_failure >= self.give_up_after:
                    raise GiveUp(f"tracking failing for {now - first_failure:.0f} s: "
                                 f"{mlflow_ship.describe(exc)}") from None
                delay = min(cap, base * 2 ** attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                end = now + delay
                while time.monotonic() < end and not self.should_stop():
                    time.sleep(min(0.2, max(0.0, end - time.monotonic())))
