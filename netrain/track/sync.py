"""`netrain sync`, the courier of `netrain run` and `sync --follow`: ship a batch's journals
that have events MLflow has not got yet, several at a time, and leave them all at once when
tracking is down; the heartbeat that keeps a followed batch to one writer."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.track.journal import pending
from netrain.track.plan import journals_at_once

#: seconds a call may fail at the end of `netrain run` before tracking counts as down
DOWN_AFTER = 3.0


@dataclass
class SyncResult:
    shipped: int = 0
    busy: int = 0
    incomplete: list[str] = field(default_factory=list)
    not_tried: int = 0


def sync_batch(batch_dir: Path, uri: str, say: Callable[[str], None],
               retry_for: float = 30.0, jobs: int | None = None) -> SyncResult:
    """Ship the batch's pending journals, ``jobs`` at a time; say one line per journal.
    Once one journal finds tracking unreachable, the others stop and the rest are left."""
    from concurrent.futures import ThreadPoolExecutor

    from netrain.track.shipper import Busy, ship

    result = SyncResult()
    todo = pending(batch_dir, uri)
    stop = threading.Event()
    lock = threading.Lock()

    def name_of(journal: Path) -> str:
        return f"{batch_dir.name} {os.path.relpath(journal, batch_dir)}"

    def tell(text: str) -> None:
        with lock:
            say(text)

    def one(journal: Path) -> None:
        name = name_of(journal)
        if stop.is_set():
            with lock:
                result.incomplete.append(name)
                result.not_tried += 1
            return

        def log(text: str) -> None:
            tell(f"  {name}: {text}")

        try:
            report = ship(journal, batch_dir, uri, give_up_after=retry_for, log=log, stop=stop)
        except Busy:
            with lock:
                result.busy += 1
            tell(f"{name}: skipped, another process is shipping it")
            return
        if report.stopped:  # tracking unreachable: the other journals would wait too
            stop.set()
        with lock:
            result.shipped += 1
            if not report.complete:
                result.incomplete.append(name)
            say(f"{name}: {report.summary()}")

    workers = min(jobs or journals_at_once(uri), max(1, len(todo)))
    if workers == 1:
        for journal in todo:
            one(journal)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="netrain-sync") as pool:
            for f in [pool.submit(one, j) for j in todo]:
                f.result()
    if result.not_tried:
        say(f"{batch_dir.name}: {result.not_tried} more journal(s) not tried")
    return result


class Courier:
    """Ships, in background threads, the journals handed to it: `netrain run` gives it each
    task's journal as the task ends, so that tasks too short to start MLflow for themselves
    share this process's MLflow client (netrain.track.plan: Who.COURIER). Once one journal
    finds tracking unreachable, the others are left at once; what is not shipped by
    ``finish`` stays for `netrain sync`."""

    def __init__(self, batch_dir: Path, uri: str, retry_for: float = 30.0,
                 jobs: int | None = None) -> None:
        import queue

        self.batch_dir, self.uri, self.retry_for = batch_dir, uri, retry_for
        self.stop = threading.Event()
        self.left: list[Path] = []
        self.active: set[Any] = set()
        self.lock = threading.Lock()
        self.todo: queue.Queue[Path | None] = queue.Queue()
        self.given: list[Path] = []
        self.done: set[Path] = set()
        # training shares the machine: fewer threads than `netrain sync` uses. Daemon
        # threads: a call hanging on a dead server never holds the run's exit.
        self.threads = [threading.Thread(target=self._run, name=f"netrain-courier-{i}",
                                         daemon=True)
                        for i in range(jobs or journals_at_once(uri, beside_training=True))]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        import contextlib

        # import MLflow and open the store while the first tasks train, not after them
        with contextlib.suppress(Exception):
            from netrain.track import mlflow_ship

            mlflow_ship.client(self.uri)
        while True:
            journal = self.todo.get()
            if journal is None:
                return
            try:
                self._ship(journal)
            finally:
                with self.lock:
                    self.done.add(journal)

    def give(self, journal: Path) -> None:
        self.given.append(journal)
        self.todo.put(journal)

    def _ship(self, journal: Path) -> None:
        from netrain.track.shipper import Busy, Shipper

        if self.stop.is_set():
            self._leave(journal)
            return
        if not journal.is_file():
            return
        try:
            with Shipper(journal, self.batch_dir, self.uri, give_up_after=self.retry_for,
                         stop=self.stop) as s:
                with self.lock:
                    self.active.add(s)
                try:
                    report = s.ship_all()
                finally:
                    with self.lock:
                        self.active.discard(s)
            if report.stopped:
                self.stop.set()
            if not report.complete:
                self._leave(journal)
        except Busy:
            return  # its own shipper has it
        except Exception:  # tracking must never change a task's outcome
            self._leave(journal)

    def _leave(self, journal: Path) -> None:
        with self.lock:
            self.left.append(journal)

    def _down(self) -> bool:
        """Tracking found unreachable: a journal gave up, or a call has failed for a few
        seconds (a blip of a healthy server passes sooner)."""
        with self.lock:
            return self.stop.is_set() or any(s.failing_for() > DOWN_AFTER
                                             for s in self.active)

    def finish(self, timeout: float) -> list[Path]:
        """Ship what was given, for up to ``timeout`` seconds, but not a moment longer
        once tracking is found unreachable; return the journals left over."""
        for _ in self.threads:
            self.todo.put(None)
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(t.is_alive() for t in self.threads):
            if self._down():
                break
            for t in self.threads:
                t.join(0.2 / len(self.threads))
        self.stop.set()  # a shipper still retrying gives up at its next check (0.2 s)
        for t in self.threads:
            t.join(max(0.0, min(5.0, end + 5.0 - time.monotonic())))
        with self.lock:
            left = list(self.left) + [j for j in self.given if j not in self.done]
        return [j for j in dict.fromkeys(left) if j.is_file()]


# ------------------------------------------------------------------ netrain sync --follow

#: records/follow.json: who follows the batch, refreshed every round; the batch's sync job
#: leaves the shipping to a follower whose heartbeat is fresh (one writer).
FOLLOW_FILE = "follow.json"


def heartbeat_path(batch_dir: Path) -> Path:
    return batch_dir / "records" / FOLLOW_FILE


def beat(batch_dir: Path, every: float) -> None:
    import json
    import socket
    import time

    path = heartbeat_path(batch_dir)
    tmp = path.with_name(f".{FOLLOW_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "time": time.time(), "every": every}), encoding="utf-8")
    os.replace(tmp, path)


def follower(batch_dir: Path) -> str | None:
    """"host pid" of a `sync --follow` whose heartbeat is fresh (three rounds), else None."""
    import json
    import time

    try:
        data = json.loads(heartbeat_path(batch_dir).read_text(encoding="utf-8"))
        if time.time() - float(data["time"]) <= 3 * float(data["every"]) + 10:
            return f"{data['host']} pid {data['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def epochs_shipped(journal: Path, start: int, end: int) -> str:
    """What the events between two offsets reached: "epoch 5: loss 0.69, val_loss 0.71" (the
    latest epoch logged, with its losses), or "" when they hold no epoch."""
    from netrain.track.journal import read_events

    top: dict[str, Any] | None = None
    for pos, ev in read_events(journal, start):
        if pos > end:
            break
        if ev["ev"] == "metrics" and (top is None or int(ev.get("step", -1)) >= top["step"]):
            top = {"step": int(ev.get("step", -1)), "values": ev.get("values") or {}}
    if top is None or top["step"] < 0:
        return ""
    losses = ", ".join(f"{k} {float(v):.4g}" for k, v in top["values"].items()
                       if k in ("loss", "val_loss"))
    return f"epoch {top['step'] + 1}" + (f": {losses}" if losses else "")


def ship_round(batch_dir: Path, uri: str, say: Callable[[str], None],
               stop: Callable[[], bool], retry_for: float) -> SyncResult:
    """Ship every pending journal once, one line each with the epoch it reached; between
    journals (never inside one) look at ``stop``."""
    from netrain.track.journal import read_state
    from netrain.track.shipper import Busy, ship

    result = SyncResult()
    for journal in pending(batch_dir):
        if stop():
            break
        name = os.path.relpath(journal, batch_dir / "journal")
        start = int(read_state(journal).get("offset", 0))
        def log(text: str, name: str = name) -> None:
            say(f"  {name}: {text}")

        try:
            report = ship(journal, batch_dir, uri, give_up_after=retry_for, log=log)
        except Busy:
            result.busy += 1
            continue
        result.shipped += 1
        what = epochs_shipped(journal, start, int(read_state(journal).get("offset", 0)))
        if report.ended:
            what += f"{'; ' if what else ''}{report.ended} run(s) ended"
        if what:
            say(f"{name}: {what}")
        if not report.complete:
            result.incomplete.append(name)
            if report.stopped:
                break
    return result


@dataclass
class FollowResult:
    rounds: int = 0
    interrupted: bool = False
    left: list[str] = field(default_factory=list)


def follow_batch(batch_dir: Path, uri: str, say: Callable[[str], None],
                 active: Callable[[], bool], sync_job_running: Callable[[], bool],
                 every: float = 5.0, retry_for: float = 30.0) -> FollowResult:
    """Ship the batch's journals as they grow, every ``every`` seconds, until ``active()``
    (a task queued or running) is false and all is shipped; while ``sync_job_running()``
    the batch's sync job is the one writer, and this waits. The first Ctrl-C stops after the
    journal being shipped (nothing half-shipped), a second one at once."""
    import signal
    import threading

    stop = threading.Event()
    result = FollowResult()

    def on_int(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        say("stopping after the journal being shipped (Ctrl-C again to stop at once)")

    old = signal.signal(signal.SIGINT, on_int)
    waiting_said = False
    try:
        while True:
            beat(batch_dir, every)
            running = active()  # read before shipping: what it wrote is then in
            if sync_job_running():
                if not waiting_said:
                    say("the batch's sync job is shipping: waiting for it")
                    waiting_said = True
            else:
                res = ship_round(batch_dir, uri, say, stop.is_set, retry_for)
                result.rounds += 1
                if res.incomplete and not running:
                    result.left = res.incomplete
                    return result
            if stop.is_set():
                result.interrupted = True
                result.left = [os.path.relpath(j, batch_dir / "journal")
                               for j in pending(batch_dir)]
                return result
            if not running and not sync_job_running() and not pending(batch_dir):
                return result
            stop.wait(every)
    finally:
        signal.signal(signal.SIGINT, old)
        with contextlib.suppress(OSError):
            heartbeat_path(batch_dir).unlink()
