"""`netrain sync`: ship every journal of a batch that has events MLflow has not got yet, once
or (--follow) as the journals grow, and the heartbeat that keeps the batch to one writer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.track.journal import pending


@dataclass
class SyncResult:
    shipped: int = 0
    busy: int = 0
    incomplete: list[str] = field(default_factory=list)


def sync_batch(batch_dir: Path, uri: str, say: Callable[[str], None],
               retry_for: float = 30.0) -> SyncResult:
    """Ship the batch's pending journals one after another; say one line per journal."""
    from netrain.track.shipper import Busy, ship

    result = SyncResult()
    todo = pending(batch_dir, uri)
    for i, journal in enumerate(todo):
        name = f"{batch_dir.name} {os.path.relpath(journal, batch_dir)}"

        def log(text: str, name: str = name) -> None:
            say(f"  {name}: {text}")

        try:
            report = ship(journal, batch_dir, uri, give_up_after=retry_for, log=log)
        except Busy:
            result.busy += 1
            say(f"{name}: skipped, another process is shipping it")
            continue
        result.shipped += 1
        say(f"{name}: {report.summary()}")
        if not report.complete:
            result.incomplete.append(name)
            if report.stopped:  # tracking unreachable: the next journals would wait too
                left = todo[i + 1:]
                result.incomplete += [f"{batch_dir.name} {os.path.relpath(j, batch_dir)}"
                                      for j in left]
                if left:
                    say(f"{batch_dir.name}: {len(left)} more journal(s) not tried")
                break
    return result


class Courier:
    """Ships, in a background thread, the journals handed to it: `netrain run` gives it
    each task's journal as the task ends, so that tasks too short to start MLflow for
    themselves (NETRAIN_SHIP_LATER) share this process's one MLflow client. What is not
    shipped by ``finish`` stays for `netrain sync`."""

    def __init__(self, batch_dir: Path, uri: str, retry_for: float = 30.0) -> None:
        import queue
        import threading

        self.batch_dir, self.uri, self.retry_for = batch_dir, uri, retry_for
        self.todo: queue.Queue[Path | None] = queue.Queue()
        self.left: list[Path] = []
        self.thread = threading.Thread(target=self._run, name="netrain-courier", daemon=True)
        self.thread.start()

    def give(self, journal: Path) -> None:
        self.todo.put(journal)

    def _run(self) -> None:
        import contextlib

        from netrain.track.shipper import Busy, ship

        # import MLflow and open the store while the first tasks train, not after them
        with contextlib.suppress(Exception):
            from netrain.track import mlflow_ship

            mlflow_ship.client(self.uri)
        while True:
            journal = self.todo.get()
            if journal is None:
                return
            if not journal.is_file():
                continue
            try:
                report = ship(journal, self.batch_dir, self.uri, give_up_after=self.retry_for)
                if not report.complete:
                    self.left.append(journal)
            except Busy:
                continue  # its own shipper has it
            except Exception:  # tracking must never change a task's outcome
                self.left.append(journal)

    def finish(self, timeout: float) -> list[Path]:
        """Ship what was given (for up to ``timeout`` seconds); the journals left over."""
        self.todo.put(None)
        self.thread.join(timeout)
        left = list(self.left)
        if self.thread.is_alive():
            while not self.todo.empty():
                item = self.todo.get_nowait()
                if item is not None:
                    left.append(item)
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
