"""Shipping a journal into MLflow: the state file, the follow loop, retries with backoff, and
the exactly-once rules (``python -m netrain.track.shipper follow JOURNAL ...``)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain import env as names
from netrain.track.journal import read_events, read_state, unshipped_bytes, write_state
from netrain.track.plan import settings

MAX_RECORDED_ERRORS = 50
INTERNAL_RETRIES = 10


class GiveUp(Exception):
    """Stop shipping now (deadline passed, or tracking down for too long); the state file
    keeps the last shipped offset, so `netrain sync` continues from there."""


class Busy(Exception):
    """Another process is shipping this journal."""


@dataclass
class ShipReport:
    journal: Path
    created: int = 0
    reopened: int = 0
    adopted: int = 0
    metric_points: int = 0
    duplicates_dropped: int = 0
    duplicates_deleted: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    ended: int = 0
    events: int = 0
    bad_lines: int = 0
    errors: list[str] = field(default_factory=list)
    left_bytes: int = 0
    stopped: str = ""

    @property
    def complete(self) -> bool:
        return self.left_bytes == 0 and not self.stopped

    def summary(self) -> str:
        parts = [f"{self.created} runs created", f"{self.reopened} reopened"]
        if self.adopted:
            parts.append(f"{self.adopted} adopted")
        parts += [f"{self.metric_points} metric points", f"{self.artifacts} artifacts",
                  f"{self.ended} ended", f"{self.events} events"]
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped} already-logged points skipped")
        if self.duplicates_deleted:
            parts.append(f"{self.duplicates_deleted} duplicate runs deleted")
        if self.errors:
            parts.append(f"{len(self.errors)} events refused by MLflow (see the state file)")
        if self.bad_lines:
            parts.append(f"{self.bad_lines} unreadable lines skipped")
        text = ", ".join(parts)
        if self.stopped:
            text += f"; stopped: {self.stopped}; {self.left_bytes} bytes left for netrain sync"
        return text


@dataclass
class _Pending:
    """One run's buffered metrics, params and tags (sent together in log_batch calls)."""

    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)


class Shipper:
    """Ships one journal from its state offset. Holds an exclusive lock on the journal
    (flock) for its lifetime, so two shippers never ship the same journal at once."""

    def __init__(self, path: Path, batch_dir: Path, uri: str, *,
                 deadline: float | None = None, give_up_after: float | None = None,
                 root_tags: Mapping[str, str] | None = None, wait_for_lock: bool = False,
                 log: Callable[[str], None] | None = None,
                 chunk_events: int | None = None,
                 stop: threading.Event | None = None) -> None:
        self.path = Path(path)
        self.batch_dir = Path(batch_dir)
        self.batch_id = self.batch_dir.resolve().name
        self.uri = uri
        self.deadline = deadline  # a time.monotonic() value, or None
        #: follow()'s liveness check, also called while a call is being retried: a writer
        #: that dies while tracking is down starts the drain deadline there too
        self.watch: Callable[[], object] | None = None
        #: follow() ends once a "close" event past this offset is shipped (None: only when
        #: the writer is gone); closed_at is the offset of the last close event shipped
        self.stop_at_close: int | None = None
        self.closed_at = -1
        self.give_up_after = give_up_after
        #: set by whoever ships the batch's other journals when one of them found tracking
        #: unreachable: this one then gives up at its next failure instead of retrying
        self.stop = stop
        self.root_tags = dict(root_tags or {})
        self.chunk_events = chunk_events or settings().chunk_events
        self.log = log or (lambda text: None)
        self.wake = threading.Event()
        self.report = ShipReport(self.path)
        self._client: Any = None
        self._lock_fd = self._lock(wait_for_lock)
        self.state = read_state(self.path)
        if self.state.get("uri") not in (None, uri):
            # Another backend: ship everything there (runs found by tag are deduplicated).
            self.state = {"offset": 0, "runs": {}}
        self.state["uri"] = uri
        # A session that died mid-chunk left "inflight": the end offset of that chunk. Its
        # events may have partly reached MLflow: metrics of that range are deduplicated.
        self.inflight_end = int(self.state.pop("inflight", 0) or 0)
        self.dedup_runs: set[str] = set()
        self._have: dict[tuple[str, str], set[int]] = {}
        self._missing_keys: set[str] = set()
        # Keys whose run this session created at its first try, no run found under the key:
        # no session before this one created that run, so none created its children either
        # (a journal is shipped in order), and a child needs no search before its create.
        self._created_fresh: set[str] = set()
        self._warned_down = False
        self._failing_since: float | None = None

    # --- locking -----------------------------------------------------------------------
    def _lock(self, wait: bool) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if not wait or self._past_deadline():
                    os.close(fd)
                    raise Busy(f"{self.path} is being shipped by another process") from None
                time.sleep(0.5)

    def close(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Shipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- retries -----------------------------------------------------------------------
    def failing_for(self) -> float:
        """Seconds the call now being retried has been failing (0 when none is)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def _past_deadline(self) -> bool:
        if self.stop is not None and self.stop.is_set() and self._warned_down:
            return True
        if self.deadline is None and self.watch is not None:
            self.watch()  # may set the deadline (see _pid_follower)
        return self.deadline is not None and time.monotonic() >= self.deadline

    @property
    def client(self) -> Any:
        if self._client is None:
            from netrain.track import mlflow_ship

            self._client = self._call("open the tracking backend",
                                      lambda: mlflow_ship.client(self.uri))
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn(), retried with exponential backoff and jitter while the error is transient.
        A permanent error is raised at once; GiveUp when the deadline or give_up_after
        passes first."""
        from netrain.track import mlflow_ship

        attempt = 0
        first_failure: float | None = None
        base, cap = settings().backoff, settings().backoff_max
        while True:
            try:
                result = fn()
                self._failing_since = None
                if self._warned_down:
                    self._warned_down = False
                    self.log("tracking reachable again: shipping")
                return result
            except Exception as exc:
                transient = mlflow_ship.is_transient(exc)
                if not transient and not (mlflow_ship.is_internal(exc)
                                          and attempt < INTERNAL_RETRIES):
                    raise
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                self._failing_since = first_failure
                if not self._warned_down:
                    self._warned_down = True
                    self.log(f"cannot {what} ({mlflow_ship.describe(exc)}): retrying; "
                             "training is not affected")
                if self.stop is not None and self.stop.is_set():
                    raise GiveUp(f"tracking unreachable: {mlflow_ship.describe(exc)}") from None
                if self._past_deadline():
                    raise GiveUp(f"deadline passed while tracking failed: "
                                 f"{mlflow_ship.describe(exc)}") from None
                if self.give_up_after is not None and now - first_failure >= self.give_up_after:
                    raise GiveUp(f"tracking failing for {now - first_failure:.0f} s: "
                                 f"{mlflow_ship.describe(exc)}") from None
                delay = min(cap, base * 2 ** attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                end = now + delay
                while time.monotonic() < end and not self._past_deadline():
                    time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    # --- shipping ----------------------------------------------------------------------
    def ship_available(self) -> int:
        """Ship every complete line now in the journal; return how many events were sent."""
        total = 0
        from netrain.track.journal import ReadStats

        while True:
            offset = int(self.state.get("offset", 0))
            stats = ReadStats()
            events = list(read_events(self.path, offset, stats, limit=self.chunk_events))
            if not events:
                skipped_to = self._skip_bad_tail(offset, stats)
                if skipped_to != offset:
                    self.report.bad_lines += stats.bad_lines
                    self.state["offset"] = skipped_to
                    self._save()
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

    def _save(self, inflight: int = 0) -> None:
        if inflight:
            self.state["inflight"] = inflight
        else:
            self.state.pop("inflight", None)
        self.state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.state["ended"] = (not self.state.get("open")
                               and unshipped_bytes(self.path, int(self.state["offset"])) == 0)
        write_state(self.path, self.state)

    def _ship_chunk(self, events: list[tuple[int, dict[str, Any]]]) -> None:
        end_offset = events[-1][0]
        self._save(inflight=max(end_offset, self.inflight_end))
        pending: dict[str, _Pending] = {}
        last_seq = int(self.state.get("seq", 0))
        for off, ev in events:
            seq = ev.get("seq")
            if isinstance(seq, int):
                if seq <= last_seq:
                    continue  # a line written twice (a writer retried after a write error)
                last_seq = seq
            self.report.events += 1
            kind = ev["ev"]
            key = ev.get("key")
            if kind == "close":
                self.closed_at = off  # the writer said it is done (its session ends here)
                continue
            if not isinstance(key, str):
                continue
            if kind in ("metrics", "params", "tags"):
                buf = pending.setdefault(key, _Pending())
                if isinstance(seq, int):
                    buf.seqs.append(seq)
                if kind == "metrics":
                    self._buffer_metrics(buf, key, ev, dedup=off <= self.inflight_end)
                elif kind == "params":
                    buf.params.update({str(k): str(v) for k, v in ev.get("params", {}).items()})
                else:
                    buf.tags.update({str(k): str(v) for k, v in ev.get("tags", {}).items()})
                continue
            if key in pending:
                self._send(key, pending.pop(key))
            handler = {"run": self._open_run, "artifacts": self._artifacts,
                       "end": self._end}.get(kind)
            if handler is not None:
                self._guard(ev, handler)
        for key, buf in pending.items():
            self._send(key, buf)
        self.state["seq"] = last_seq
        self.state["offset"] = end_offset
        if end_offset >= self.inflight_end:
            self.inflight_end = 0
        self._save(inflight=self.inflight_end)

    def _record(self, key: str, what: str, seqs: list[int], exc: BaseException | str) -> None:
        from netrain.track import mlflow_ship

        text = exc if isinstance(exc, str) else mlflow_ship.describe(exc)
        entry = {"key": key, "ev": what, "seq": seqs[:1] + seqs[-1:] if seqs else [],
                 "error": text}
        self.report.errors.append(f"{key} {what}: {text}")
        errors = self.state.setdefault("errors", [])
        self.state["error_count"] = int(self.state.get("error_count", 0)) + 1
        if len(errors) < MAX_RECORDED_ERRORS:
            errors.append(entry)
        self.log(f"MLflow refused {what} of {key}: {text} (recorded in the state file; "
                 "shipping goes on)")

    def _guard(self, ev: dict[str, Any], fn: Callable[[dict[str, Any]], None]) -> None:
        """Run one event's calls; a permanent error is recorded and shipping goes on."""
        try:
            fn(ev)
        except GiveUp:
            raise
        except Exception as exc:
            seq = ev.get("seq")
            self._record(str(ev.get("key")), str(ev["ev"]),
                         [seq] if isinstance(seq, int) else [], exc)

    def _run_id(self, key: str) -> str | None:
        run_id = self.state["runs"].get(key)
        if run_id is None and key not in self._missing_keys:
            self._missing_keys.add(key)
            self._record(key, "events", [], f"no run event for key {key!r} before its events")
        return run_id

    def _rebound_experiment(self) -> str:
        """A batch moved to another project's tracking store (netrain.execute.relocate) has
        its experiment there: events written before the move name the old store's. Read
        from the manifest's tracking mapping as plain YAML (track/ knows runs, not batches:
        this one field is all it needs of batch.yaml)."""
        if not hasattr(self, "_rebound"):
            self._rebound = ""
            import contextlib

            with contextlib.suppress(Exception):
                import yaml

                text = (Path(self.batch_dir) / "batch.yaml").read_text(encoding="utf-8")
                t = yaml.safe_load(text)["tracking"]
                if t.get("rebound_from") and str(t.get("uri")) == self.uri:
                    self._rebound = str(t.get("experiment_id") or "")
        return self._rebound

    # --- one event kind each --------------------------------------------------------------
    def _open_run(self, ev: dict[str, Any]) -> None:
        from netrain.track import mlflow_ship

        key = str(ev["key"])
        experiment_id = self._rebound_experiment() or str(ev.get("experiment_id", ""))
        key_value = f"{self.batch_id}:{key}"
        tags: dict[str, str] = {}
        if ev.get("parent") is None:
            tags.update(self.root_tags)
        tags.update({str(k): str(v) for k, v in (ev.get("tags") or {}).items()})
        tags[mlflow_ship.KEY_TAG] = key_value
        name = str(ev.get("name") or "")
        if name:
            tags["mlflow.runName"] = name
        parent = ev.get("parent")
        if parent is not None:
            parent_id = self.state["runs"].get(str(parent))
            if parent_id:
                tags[mlflow_ship.PARENT_TAG] = parent_id
            else:
                self._record(key, "run", [], f"parent {parent!r} has no run: no parent link")
        mapped = self.state["runs"].get(key)
        if mapped is not None:
            try:
                self._call("reopen a run", lambda: mlflow_ship.reopen_run(self.client, mapped,
                                                                         tags))
                self.report.reopened += 1
                self._opened(key)
                return
            except GiveUp:
                raise
            except Exception:
                self.state["runs"].pop(key, None)  # deleted meanwhile: find or create
        adopt = ev.get("adopt")
        if adopt and self._call("look a run up",
                                lambda: mlflow_ship.run_exists(self.client, str(adopt))):
            self._call("adopt a run", lambda: mlflow_ship.reopen_run(self.client, str(adopt),
                                                                    tags))
            self.state["runs"][key] = str(adopt)
            self.report.adopted += 1
            self._opened(key)
            return

        uncertain = []
        tries: list[int] = []
        unseen = parent is not None and str(parent) in self._created_fresh

        def find_or_create() -> tuple[str, bool]:
            # Searched again on every retry: a create whose answer was lost is found here.
            if tries or not unseen:
                found = mlflow_ship.find_runs_by_key(self.client, experiment_id, key_value)
                if found:
                    return found[0], False
            tries.append(1)
            start = ev.get("t")
            try:
                return mlflow_ship.create_run(self.client, experiment_id, name, tags,
                                              int(start) if isinstance(start, int) else None
                                              ), True
            except Exception as exc:
                if not mlflow_ship.never_arrived(exc):
                    uncertain.append(1)
                raise

        run_id, created = self._call("create a run", find_or_create)
        self.state["runs"][key] = run_id
        if uncertain:
            # An earlier try failed after it may have reached the server, which may still
            # create that run later: checked again at the run's end and by later sessions.
            self.state.setdefault("uncertain", {})[key] = [experiment_id, time.time()]
        if created:
            self.report.created += 1
            if len(tries) == 1:
                self._created_fresh.add(key)
        else:
            self.dedup_runs.add(run_id)
            self._call("reopen a run",
                       lambda: mlflow_ship.reopen_run(self.client, run_id, tags))
            self.report.reopened += 1
        self._opened(key)

    def _opened(self, key: str) -> None:
        self.state["open"] = sorted({*self.state.get("open", []), key})

    def _buffer_metrics(self, buf: _Pending, key: str, ev: dict[str, Any], dedup: bool) -> None:
        run_id = self.state["runs"].get(key)
        step = int(ev.get("step", 0))
        ts = int(ev.get("t", time.time() * 1000))
        for name, value in (ev.get("values") or {}).items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            # a run this session created, no run found under its key, holds no points yet:
            # nothing to read back (a chunk left in flight by a session that failed at once
            # would otherwise cost a metric-history read per metric and run)
            if run_id is not None and key not in self._created_fresh and (
                    dedup or run_id in self.dedup_runs):
                have = self._history(run_id, str(name))
                if step in have:
                    self.report.duplicates_dropped += 1
                    continue
                have.add(step)
            buf.metrics.append((str(name), number, ts, step))

    def _history(self, run_id: str, name: str) -> set[int]:
        from netrain.track import mlflow_ship

        cached = self._have.get((run_id, name))
        if cached is None:
            pairs = self._call("read a metric's history",
                               lambda: mlflow_ship.logged_steps(self.client, run_id, [name]))
            cached = {step for _, step in pairs}
            self._have[(run_id, name)] = cached
        return cached

    def _send(self, key: str, buf: _Pending) -> None:
        from netrain.track import mlflow_ship

        run_id = self._run_id(key)
        if run_id is None:
            return
        try:
            self._call("send metrics", lambda: mlflow_ship.log_batch(
                self.client, run_id, buf.metrics, buf.params, buf.tags))
        except GiveUp:
            raise
        except Exception:
            # Find the refused part: each kind alone, params one by one.
            self._send_parts(key, run_id, buf)
            return
        self.report.metric_points += len(buf.metrics)
        self.report.params += len(buf.params)
        self.report.tags += len(buf.tags)

    def _send_parts(self, key: str, run_id: str, buf: _Pending) -> None:
        from netrain.track import mlflow_ship

        parts: list[tuple[str, list[Any], dict[str, str], dict[str, str]]] = [
            ("metrics", buf.metrics, {}, {}), ("tags", [], {}, buf.tags)]
        parts += [("params", [], {k: v}, {}) for k, v in buf.params.items()]
        for what, metrics, params, tags in parts:
            if not (metrics or params or tags):
                continue

            def send(m: list[Any] = metrics, p: dict[str, str] = params,
                     t: dict[str, str] = tags) -> int:
                return int(mlflow_ship.log_batch(self.client, run_id, m, p, t))

            try:
                self._call(f"send {what}", send)
            except GiveUp:
                raise
            except Exception as exc:
                self._record(key, what, buf.seqs, exc)
                continue
            self.report.metric_points += len(metrics)
            self.report.params += len(params)
            self.report.tags += len(tags)

    def _artifacts(self, ev: dict[str, Any]) -> None:
        from netrain.track import mlflow_ship

        key = str(ev["key"])
        run_id = self._run_id(key)
        if run_id is None:
            return
        files: list[tuple[str, Path]] = []
        missing = []
        for pair in ev.get("files") or []:
            sub, rel = str(pair[0]), Path(str(pair[1]))
            path = rel if rel.is_absolute() else self.batch_dir / rel
            if path.is_file():
                files.append((sub, path))
            else:
                missing.append(str(rel))
        if missing:
            seq = ev.get("seq")
            self._record(key, "artifacts", [seq] if isinstance(seq, int) else [],
                         f"files not found: {', '.join(missing)}")
        if files:
            self.report.artifacts += self._call("upload artifacts", lambda: mlflow_ship.
                                                log_artifacts(self.client, run_id, files))

    def _end(self, ev: dict[str, Any]) -> None:
        from netrain.track import mlflow_ship

        key = str(ev["key"])
        run_id = self._run_id(key)
        if run_id is None:
            return
        status = str(ev.get("status") or "FINISHED")
        t = ev.get("t")
        self._call("end a run", lambda: mlflow_ship.terminate(
            self.client, run_id, status, int(t) if isinstance(t, int) else None))
        self.report.ended += 1
        self.state["open"] = [k for k in self.state.get("open", []) if k != key]
        if key in self.state.get("uncertain", {}):
            self._reconcile(key)

    def _reconcile(self, key: str) -> None:
        """Delete a second run of an uncertain create; forget the key once the create is
        old enough that no server can still be working on it."""
        from netrain.track import mlflow_ship

        experiment_id, when = self.state["uncertain"][key]
        run_id = self.state["runs"].get(key)
        if run_id is None:
            return
        n = self._call("look for a second run", lambda: mlflow_ship.delete_duplicates(
            self.client, experiment_id, f"{self.batch_id}:{key}", run_id))
        self.report.duplicates_deleted += n
        if time.time() - float(when) > 2 * settings().http_timeout:
            del self.state["uncertain"][key]

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
        self.watch = alive
        try:
            while True:
                writer_alive = alive()  # read before shipping: lines written before it died
                self.ship_available()
                if not writer_alive:
                    break
                if self.stop_at_close is not None and self.closed_at > self.stop_at_close:
                    break  # the writer closed its session: done, even if it still lives
                if self._past_deadline():
                    raise GiveUp("deadline passed")
                self.wake.wait(poll)
                self.wake.clear()
        except GiveUp as exc:
            self.report.stopped = str(exc)
        return self._finish()

    def _finish(self) -> ShipReport:
        if self.state.get("uncertain") and not self.report.stopped:
            try:
                for key in list(self.state["uncertain"]):
                    self._reconcile(key)
                if not self.state["uncertain"]:
                    del self.state["uncertain"]
                self._save()
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
    the exactly-once rules: this module's docstring). With
    ``follow``, keep tailing until it returns False and the file is fully shipped, or the
    deadline (a time.monotonic() value) passes."""
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
    born = _start_time(pid)

    def alive() -> bool:
        if pid_alive(pid) and _start_time(pid) == born:
            return True
        if s.deadline is None:
            s.deadline = time.monotonic() + drain
        return False
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
