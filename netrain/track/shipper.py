"""Shipping a journal into MLflow: the follow loop, chunk after chunk from the state offset
(``python -m netrain.track.shipper follow JOURNAL ...``). The parts: ship_state (the lock and
the state file), ship_retry (backoff and deadlines), ship_chunk (events as lanes of calls),
ship_calls (the calls, exactly once)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from netrain import env as names
from netrain.track import ship_chunk
from netrain.track.journal import ReadStats, read_events, unshipped_bytes
from netrain.track.plan import is_server, settings
from netrain.track.ship_calls import RunCalls, ShipReport
from netrain.track.ship_retry import GiveUp, Retry
from netrain.track.ship_state import Busy, JournalLock, ShipState

__all__ = ["Busy", "GiveUp", "ShipReport", "Shipper", "main", "ship"]

#: calls in flight from this process to one tracking server, all journals together. An
#: MLflow server worker has 15 database connections and a log_batch holds two at once:
#: 32 calls at once timed its pool out (30 s stalls, measured)
IN_FLIGHT = 8
_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def lanes_for(uri: str) -> int:
    """Runs of a journal shipped at once to this backend (a SQLite file or database URI:
    one at a time; a server: plan.Settings.lanes)."""
    return settings().lanes if is_server(uri) else 1


def slots_for(uri: str) -> threading.BoundedSemaphore:
    """The process's calls in flight to this server, shared by its shippers."""
    with _slots_lock:
        if uri not in _slots:
            _slots[uri] = threading.BoundedSemaphore(IN_FLIGHT)
        return _slots[uri]


class Shipper:
    """Ships one journal from its state offset. Holds an exclusive lock on the journal
    (flock) for its lifetime, so two shippers never ship the same journal at once."""

    def __init__(self, path: Path, batch_dir: Path, uri: str, *,
                 deadline: float | None = None, give_up_after: float | None = None,
                 root_tags: Mapping[str, str] | None = None, wait_for_lock: bool = False,
                 log: Callable[[str], None] | None = None,
                 chunk_events: int | None = None,
                 stop: threading.Event | None = None, lanes: int | None = None) -> None:
        self.path = Path(path)
        self.batch_dir = Path(batch_dir)
        self.uri = uri
        self.retry = Retry(deadline, give_up_after, stop, log)
        #: follow() ends once a "close" event past this offset is shipped (None: only when
        #: the writer is gone); closed_at is the offset of the last close event shipped
        self.stop_at_close: int | None = None
        self.closed_at = -1
        self.chunk_events = chunk_events or settings().chunk_events
        self.lanes = lanes or lanes_for(uri)
        self.wake = threading.Event()
        self.report = ShipReport(self.path)
        self._lock = JournalLock(self.path, wait_for_lock, self.retry.should_stop)
        self.state = ShipState(self.path, uri)
        self.calls = RunCalls(self.batch_dir, uri, self.state, self.retry, self.report,
                              dict(root_tags or {}))

    # the retry policy's settings, as callers (launcher, sync, tests) set them
    @property
    def deadline(self) -> float | None:
        return self.retry.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.retry.deadline = value

    @property
    def give_up_after(self) -> float | None:
        return self.retry.give_up_after

    @give_up_after.setter
    def give_up_after(self, value: float | None) -> None:
        self.retry.give_up_after = value

    @property
    def stop(self) -> threading.Event | None:
        return self.retry.stop

    @stop.setter
    def stop(self, value: threading.Event | None) -> None:
        self.retry.stop = value

    def failing_for(self) -> float:
        """Seconds the call now being retried has been failing (0 when none is)."""
        return self.retry.failing_for()

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        return self.retry.call(what, fn)

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> Shipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- shipping ----------------------------------------------------------------------
    def ship_available(self) -> int:
        """Ship every complete line now in the journal; return how many events were sent."""
        total = 0
        while True:
            offset = self.state.offset
            stats = ReadStats()
            events = list(read_events(self.path, offset, stats, limit=self.chunk_events))
            if not events:
                skipped_to = self._skip_bad_tail(offset, stats)
                if skipped_to != offset:
                    self.report.bad_lines += stats.bad_lines
                    self.state.advance(skipped_to, self.state.seq)
                    self.state.save()
                return total
            self.report.bad_lines += stats.bad_lines
            self._ship_chunk(events)
            total += len(events)

    def _skip_bad_tail(self, offset: int, stats: Any) -> int:
        """Past the last event, complete lines that are not events (a torn line ended by a
        later writer session) are skipped so they do not stay pending forever."""
        if stats.bad_lines == 0:
            return offset
        with open(self.path, "rb") as f:
            f.seek(offset)
            rest = f.read()
        end = rest.rfind(b"\n")
        return offset + end + 1 if end >= 0 else offset

    def _ship_chunk(self, events: list[tuple[int, dict[str, Any]]]) -> None:
        """Ship one chunk: the state file says "in flight" until all of it is in MLflow
        (a session that dies meanwhile leaves the next one to skip points already there)."""
        end_offset = events[-1][0]
        before = self.state.inflight_end
        self.state.save(inflight=max(end_offset, before))
        reached = self.retry.reached
        try:
            self._run_chunk(events, end_offset)
        except GiveUp:
            if self.retry.reached == reached:
                # no call of this chunk reached the server (tracking down from the start):
                # nothing of it can be in MLflow, so the next session ships it as new
                # (whole runs and all) instead of checking each point
                self.state.inflight_end = before
                self.state.save(inflight=before)
            raise

    def _run_chunk(self, events: list[tuple[int, dict[str, Any]]], end_offset: int) -> None:
        chunk = ship_chunk.plan(events, self.state.seq, self.state.inflight_end)
        self.report.add(events=chunk.events)
        if chunk.closed_at >= 0:
            self.closed_at = chunk.closed_at
        if chunk.order and self.lanes > 1:
            _ = self.calls.client  # opened once, before the lanes share it
        if self.lanes > 1:
            slots = slots_for(self.uri)

            def do(op: ship_chunk.Op) -> None:
                with slots:
                    self.calls.do(op)

            ship_chunk.run(chunk, do, self.lanes)
        else:
            ship_chunk.run(chunk, self.calls.do, 1)
        self.state.advance(end_offset, chunk.last_seq)
        if end_offset >= self.state.inflight_end:
            self.state.inflight_end = 0
        self.state.save(inflight=self.state.inflight_end)

    # --- loops -------------------------------------------------------------------------
    def ship_all(self) -> ShipReport:
        """Ship what the journal holds now, once."""
        try:
            self.ship_available()
        except GiveUp as exc:
            self.report.stopped = str(exc)
        return self._finish()

    def follow(self, alive: Callable[[], bool], poll: float = 1.0) -> ShipReport:
        """Tail the journal while alive() is true; then ship what is left and return, or
        stop when the deadline passes."""
        self.retry.watch = alive
        try:
            while True:
                writer_alive = alive()  # read before shipping: lines written before it died
                if not writer_alive:
                    self.retry.writer_gone()
                self.ship_available()
                if not writer_alive:
                    break
                if self.stop_at_close is not None and self.closed_at > self.stop_at_close:
                    break  # the writer closed its session: done, even if it still lives
                if self.retry.should_stop():
                    raise GiveUp("deadline passed")
                self.wake.wait(poll)
                self.wake.clear()
        except GiveUp as exc:
            self.report.stopped = str(exc)
        return self._finish()

    def _finish(self) -> ShipReport:
        if self.state.uncertain() and not self.report.stopped:
            try:
                for key in self.state.uncertain():
                    self.calls.reconcile(key)
                self.state.save()
            except GiveUp as exc:
                self.report.stopped = str(exc)
        self.report.left_bytes = unshipped_bytes(self.path)
        return self.report


def ship(path: Path, batch_dir: Path, uri: str, follow: Callable[[], bool] | None = None,
         deadline: float | None = None, *, give_up_after: float | None = None,
         root_tags: Mapping[str, str] | None = None,
         log: Callable[[str], None] | None = None,
         stop: threading.Event | None = None) -> ShipReport:
    """Ship a journal from its state offset (its layout and state file: netrain.track.journal;
    the exactly-once rules: netrain.track.ship_calls). With ``follow``, keep tailing until it
    returns False and the file is fully shipped, or the deadline (a time.monotonic() value)
    passes."""
    with Shipper(path, batch_dir, uri, deadline=deadline, give_up_after=give_up_after,
                 root_tags=root_tags, wait_for_lock=follow is not None, log=log,
                 stop=stop) as s:
        return s.follow(follow) if follow is not None else s.ship_all()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_follower(s: Shipper, pid: int, drain: float) -> Callable[[], bool]:
    """The writer's liveness check for s.follow(); its end gives s ``drain`` seconds more."""
    born = _start_time(pid)
    s.retry.drain = drain

    def alive() -> bool:
        return pid_alive(pid) and _start_time(pid) == born
    return alive


def _stderr(text: str) -> None:
    print(f"netrain: shipper: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netrain.track.shipper",
                                 description="Ship a netrain tracking journal into MLflow.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("follow", help="tail a journal until the writer process is gone")
    f.add_argument("journal", type=Path)
    f.add_argument("--batch-dir", type=Path, required=True)
    f.add_argument("--uri", required=True)
    f.add_argument("--pid", type=int, required=True, help="the writer's process id")
    f.add_argument("--drain-timeout", type=float, default=None,
                   help="seconds to keep shipping after the writer is gone "
                        f"(default: ${names.DRAIN_TIMEOUT} or 60)")
    o = sub.add_parser("once", help="ship what a journal holds now")
    o.add_argument("journal", type=Path)
    o.add_argument("--batch-dir", type=Path, required=True)
    o.add_argument("--uri", required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "once":
            report = ship(a.journal, a.batch_dir, a.uri, log=_stderr)
        else:
            # scancel and SLURM's end of a job signal every process of the job: the follower
            # keeps shipping the task's last events (bounded by the drain time) instead of
            # dying with them; SLURM's SIGKILL after KillWait still ends it
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            drain = a.drain_timeout if a.drain_timeout is not None else \
                settings().drain_timeout
            try:
                start = a.journal.stat().st_size  # the writer's session begins past here
            except OSError:
                start = 0
            with Shipper(a.journal, a.batch_dir, a.uri, wait_for_lock=True, log=_stderr) as s:
                s.stop_at_close = start - 1
                report = s.follow(_pid_follower(s, a.pid, drain))
    except Busy as exc:
        _stderr(str(exc))
        return 0
    _stderr(f"{a.journal}: {report.summary()}")
    return 0 if report.complete else 3


if __name__ == "__main__":
    from netrain.exits import run_main

    run_main(main, "netrain: shipper")
