"""The shipper process a task starts beside itself when no launcher ships for it: started
when the shipping plan says (netrain.track.plan.for_task), given its drain time at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from netrain.track.plan import TaskShipping, for_task


def _stderr(text: str) -> None:
    print(f"netrain: {text}", file=sys.stderr, flush=True)


class TaskShipper:
    """``python -m netrain.track.shipper follow`` for this process's journal."""

    def __init__(self, journal: Path, batch_dir: Path, uri: str,
                 plan: TaskShipping | None = None) -> None:
        self.journal, self.batch_dir, self.uri = journal, batch_dir, uri
        self.plan = plan if plan is not None else for_task(uri, launcher=False)
        self.process: subprocess.Popen[bytes] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._ended = False

    def start(self, say: Callable[[str], None] = _stderr) -> None:
        """Start it now, or once the task has trained ``plan.after`` seconds, or never (the
        plan's note says why)."""
        if self.plan.note:
            say(self.plan.note)
        if not self.plan.where:
            return
        if self.plan.after > 0:
            self._timer = threading.Timer(self.plan.after, self._spawn)
            self._timer.daemon = True
            self._timer.start()
        else:
            self._spawn()

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "netrain.track.shipper", "follow", str(self.journal),
               "--batch-dir", str(self.batch_dir), "--uri", self.uri,
               "--pid", str(os.getpid())]
        with self._lock, contextlib.suppress(OSError):
            if not self._ended:
                self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL,
                                                start_new_session=True)

    def wait(self) -> None:
        """The task ends: its follower ships the journal's end; give it the drain time
        before the task exits (a batch job's end would kill it with the job)."""
        with self._lock:
            self._ended = True  # a follower not started by now is not needed
            if self._timer is not None:
                self._timer.cancel()
        if self.process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.process.wait(timeout=self.plan.drain + 5)
