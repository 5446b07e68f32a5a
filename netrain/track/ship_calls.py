"""A journal's ops turned into MLflow calls, exactly once: runs found or created by key,
metric points already in MLflow skipped, refused events recorded, and a second run left by a
create whose answer was lost deleted; what was shipped counted in the ShipReport."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.track.plan import settings
from netrain.track.ship_chunk import Op, Pending
from netrain.track.ship_dedup import Seen
from netrain.track.ship_retry import GiveUp, Retry
from netrain.track.ship_state import ShipState

#: a run whose files are larger goes call by call (a whole-run request is held in memory)
WHOLE_RUN_MAX_BYTES = 64 * 2**20


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to counters (the run lanes of a journal count at once)."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

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


class RunCalls:
    """The MLflow calls of one journal's runs (thread-safe: lanes call it at once)."""

    def __init__(self, batch_dir: Path, uri: str, state: ShipState, retry: Retry,
                 report: ShipReport, root_tags: dict[str, str]) -> None:
        self.batch_dir = batch_dir
        self.batch_id = batch_dir.resolve().name
        self.uri = uri
        self.state, self.retry, self.report = state, retry, report
        self.root_tags = root_tags
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.seen = Seen(self._logged_steps)
        self._missing_keys: set[str] = set()
        self._rebound: str | None = None
        #: keys a whole-run request may have created a run for: searched before a create
        self._may_exist: set[str] = set()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from netrain.track import mlflow_ship

                self._client = self.retry.call("open the tracking backend",
                                               lambda: mlflow_ship.client(self.uri),
                                               remote=False)
            return self._client

    # --- one op ----------------------------------------------------------------------------
    def do(self, op: Op) -> None:
        """Run one op's calls; a permanent error is recorded and shipping goes on."""
        try:
            if op.kind == "send":
                assert op.buf is not None
                self.send(op.key, op.buf)
            elif op.kind == "run":
                self.open_run(op.ev, op.late_tags)
            elif op.kind == "artifacts":
                self.artifacts(op.ev)
            elif op.kind == "end":
                self.end(op.ev)
            elif op.kind == "whole":
                self.wholes([op])
            elif op.kind == "wholes":
                self.wholes(op.parts)
        except GiveUp:
            raise
        except Exception as exc:
            seq = op.ev.get("seq")
            self.record(op.key, op.kind if op.kind != "send" else "events",
                        [seq] if isinstance(seq, int) else [], exc)

    def record(self, key: str, what: str, seqs: list[int], exc: BaseException | str) -> None:
        from netrain.track import mlflow_ship

        text = exc if isinstance(exc, str) else mlflow_ship.describe(exc)
        self.state.record_error({"key": key, "ev": what,
                                 "seq": seqs[:1] + seqs[-1:] if seqs else [], "error": text})
        with self.state.lock:
            self.report.errors.append(f"{key} {what}: {text}")
        self.retry.log(f"MLflow refused {what} of {key}: {text} (recorded in the state file; "
                       "shipping goes on)")

    def run_id(self, key: str) -> str | None:
        run_id = self.state.run_id(key)
        if run_id is None:
            with self.state.lock:
                first = key not in self._missing_keys
                self._missing_keys.add(key)
            if first:
                self.record(key, "events", [], f"no run event for key {key!r} before its events")
        return run_id

    def rebound_experiment(self) -> str:
        """A batch moved to another project's tracking store (netrain.execute.relocate) has
        its experiment there: events written before the move name the old store's. Read
        from the manifest's tracking mapping as plain YAML (track/ knows runs, not batches:
        this one field is all it needs of batch.yaml)."""
        if self._rebound is None:
            rebound = ""
            import contextlib

            with contextlib.suppress(Exception):
                import yaml

                text = (self.batch_dir / "batch.yaml").read_text(encoding="utf-8")
                t = yaml.safe_load(text)["tracking"]
                if t.get("rebound_from") and str(t.get("uri")) == self.uri:
                    rebound = str(t.get("experiment_id") or "")
            self._rebound = rebound
        return self._rebound

    # --- runs ------------------------------------------------------------------------------
    def run_tags(self, ev: dict[str, Any], key_value: str) -> dict[str, str]:
        """The tags a run is created (or reopened) with: the root tags of a task, the
        event's, its key, its name and its parent's run id."""
        from netrain.track import mlflow_ship

        key = str(ev["key"])
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
            parent_id = self.state.run_id(str(parent))
            if parent_id:
                tags[mlflow_ship.PARENT_TAG] = parent_id
            else:
                self.record(key, "run", [], f"parent {parent!r} has no run: no parent link")
        return tags

    def open_run(self, ev: dict[str, Any], late_tags: dict[str, str] | None = None) -> None:
        """Reopen the run mapped to the key, adopt the one named, or find or create it.
        ``late_tags`` (the run's later tags events) go with it; if MLflow refuses them
        there, the run is opened without them and they are sent on their own."""
        if late_tags:
            tags = self.run_tags(ev, f"{self.batch_id}:{ev['key']}")
            try:
                self._open(ev, {**tags, **late_tags})
                self.report.add(tags=len(late_tags))
                return
            except GiveUp:
                raise
            except Exception:
                pass
            self._open(ev, tags)
            self.send(str(ev["key"]), Pending(tags=dict(late_tags)))
            return
        self._open(ev, self.run_tags(ev, f"{self.batch_id}:{ev['key']}"))

    def _open(self, ev: dict[str, Any], tags: dict[str, str]) -> None:
        from netrain.track import mlflow_ship

        key = str(ev["key"])
        experiment_id = self.rebound_experiment() or str(ev.get("experiment_id", ""))
        key_value = f"{self.batch_id}:{key}"
        mapped = self.state.run_id(key)
        if mapped is not None:
            try:
                self.retry.call("reopen a run",
                                lambda: mlflow_ship.reopen_run(self.client, mapped, tags))
                self.report.add(reopened=1)
                self.state.opened(key)
                return
            except GiveUp:
                raise
            except Exception:
                self.state.forget_run(key)  # deleted meanwhile: find or create
        adopt = ev.get("adopt")
        if adopt and self.retry.call("look a run up",
                                     lambda: mlflow_ship.run_exists(self.client, str(adopt))):
            self.retry.call("adopt a run",
                            lambda: mlflow_ship.reopen_run(self.client, str(adopt), tags))
            self.state.set_run(key, str(adopt))
            self.report.add(adopted=1)
            self.state.opened(key)
            return
        run_id, created, tries = self._find_or_create(ev, key, experiment_id, key_value, tags)
        self.state.set_run(key, run_id)
        if created:
            self.report.add(created=1)
            if tries == 1:
                self.seen.created_fresh.add(key)
        else:
            self.seen.found_runs.add(run_id)
            self.retry.call("reopen a run",
                            lambda: mlflow_ship.reopen_run(self.client, run_id, tags))
            self.report.add(reopened=1)
        self.state.opened(key)

    def _find_or_create(self, ev: dict[str, Any], key: str, experiment_id: str,
                        key_value: str, tags: dict[str, str]) -> tuple[str, bool, int]:
        """(run id, created, tries). The key is searched before each try but the first of a
        child whose parent this session created fresh: a create whose answer was lost is
        found there. A try that may have reached the server marks the key uncertain."""
        from netrain.track import mlflow_ship

        uncertain: list[int] = []
        tries: list[int] = []
        parent = ev.get("parent")
        unseen = (parent is not None and str(parent) in self.seen.created_fresh
                  and key not in self._may_exist)
        start = ev.get("t")

        def find_or_create() -> tuple[str, bool]:
            if tries or not unseen:
                found = mlflow_ship.find_runs_by_key(self.client, experiment_id, key_value)
                if found:
                    return found[0], False
            tries.append(1)
            try:
                return mlflow_ship.create_run(self.client, experiment_id,
                                              str(ev.get("name") or ""), tags,
                                              int(start) if isinstance(start, int) else None
                                              ), True
            except Exception as exc:
                if not mlflow_ship.never_arrived(exc):
                    uncertain.append(1)
                raise

        run_id, created = self.retry.call("create a run", find_or_create)
        if uncertain:
            # An earlier try failed after it may have reached the server, which may still
            # create that run later: checked again at the run's end and by later sessions.
            self.state.mark_uncertain(key, experiment_id)
        return run_id, created, len(tries)

    # --- runs whole, several in one request --------------------------------------------------
    def wholes(self, members: list[Op]) -> None:
        """Ship runs whose whole life is in the chunk (each a "whole" op: run, send,
        artifacts, end) to a `netrain server`, several in one request. A run that cannot go
        so (another server, a run some session already began to ship, a missing file) or
        whose request failed goes call by call; after a request that may have reached the
        server, its run is first looked up by its key."""
        ready: dict[str, list[tuple[Op, Any, int]]] = {}
        for op in members:
            whole = self._whole(op)
            if whole is None:
                self._by_parts(op)
            else:
                ready.setdefault(whole[0], []).append((op, whole[1], whole[2]))
        for experiment_id, runs in ready.items():
            while runs:  # requests of at most WHOLE_RUN_MAX_BYTES of files (one run: any)
                size, n = 0, 0
                for _, _, nbytes in runs:
                    size += nbytes
                    if n and size > WHOLE_RUN_MAX_BYTES:
                        break
                    n += 1
                self._send_wholes(experiment_id, [(op, run) for op, run, _ in runs[:n]])
                runs = runs[n:]

    def _by_parts(self, op: Op) -> None:
        for part in op.parts:
            self.do(part)

    def _whole(self, op: Op) -> tuple[str, Any, int] | None:
        """(experiment id, mlflow_ship.WholeRun, bytes of its files) of a "whole" op that
        may go whole."""
        from netrain.track import mlflow_ship

        run_op, *middle, end_op = op.parts
        ev, key = run_op.ev, op.key
        if (not self.uri.startswith(("http://", "https://"))
                or self.uri in mlflow_ship.NO_WHOLE_RUN or run_op.maybe_sent
                or ev.get("adopt") or self.state.run_id(key) is not None
                or self.state.is_uncertain(key) or key in self._may_exist):
            return None
        buf = Pending()
        files: list[tuple[str, Path]] = []
        for part in middle:
            if part.kind == "send" and part.buf is not None:
                buf = part.buf
            for pair in part.ev.get("files") or []:
                rel = Path(str(pair[1]))
                files.append((str(pair[0]), rel if rel.is_absolute() else self.batch_dir / rel))
        if any(point[4] for point in buf.metrics):
            return None
        try:
            size = sum(path.stat().st_size for _, path in files)
        except OSError:
            return None  # a missing file: recorded by the call-by-call path
        parent = ev.get("parent")
        if size > WHOLE_RUN_MAX_BYTES or (parent is not None
                                          and self.state.run_id(str(parent)) is None):
            return None
        tags = {**self.run_tags(ev, f"{self.batch_id}:{key}"), **run_op.late_tags, **buf.tags}
        start, end = ev.get("t"), end_op.ev.get("t")
        return (self.rebound_experiment() or str(ev.get("experiment_id", "")),
                mlflow_ship.WholeRun(
                    name=str(ev.get("name") or ""), tags=tags,
                    start_time=int(start) if isinstance(start, int) else None,
                    metrics=[(n, v, ts, step) for n, v, ts, step, _ in buf.metrics],
                    params=buf.params, files=files,
                    status=str(end_op.ev.get("status") or "FINISHED"),
                    end_time=int(end) if isinstance(end, int) else None),
                size)

    def _send_wholes(self, experiment_id: str, runs: list[tuple[Op, Any]]) -> None:
        from netrain.track import mlflow_ship

        try:
            answer = mlflow_ship.whole_runs(self.client, experiment_id, [r for _, r in runs])
            self.retry.saw(None)
        except GiveUp:
            raise
        except Exception as exc:
            self.retry.saw(exc)
            if not mlflow_ship.never_arrived(exc):
                status = mlflow_ship.http_status(exc)
                for op, _ in runs:
                    with self.state.lock:
                        self._may_exist.add(op.key)
                    if status is None or status >= 500:
                        # the server may still be at work on it: checked again at the end
                        self.state.mark_uncertain(op.key, experiment_id, whole=True)
            for op, _ in runs:
                self._by_parts(op)
            return
        if answer is None:  # a plain mlflow server
            for op, _ in runs:
                self._by_parts(op)
            return
        for (op, run), run_id in zip(runs, answer.run_ids, strict=False):
            self.state.set_run(op.key, run_id)
            self.report.add(created=1, metric_points=len(run.metrics), params=len(run.params),
                            tags=len(op.parts[0].late_tags), artifacts=len(run.files),
                            ended=1)
        rest = runs[len(answer.run_ids):]
        if rest:  # the first of them failed and may exist in part; the others were not tried
            with self.state.lock:
                self._may_exist.add(rest[0][0].key)
            for op, _ in rest:
                self._by_parts(op)

    # --- metrics, params, tags ---------------------------------------------------------------
    def send(self, key: str, buf: Pending) -> None:
        from netrain.track import mlflow_ship

        run_id = self.run_id(key)
        if run_id is None:
            return
        metrics, dropped = self.seen.new_points(key, run_id, buf)
        if dropped:
            self.report.add(duplicates_dropped=dropped)
        try:
            self.retry.call("send metrics", lambda: mlflow_ship.log_batch(
                self.client, run_id, metrics, buf.params, buf.tags))
        except GiveUp:
            raise
        except Exception:
            # Find the refused part: each kind alone, params one by one.
            self._send_parts(key, run_id, buf, metrics)
            return
        self.report.add(metric_points=len(metrics), params=len(buf.params), tags=len(buf.tags))

    def _logged_steps(self, run_id: str, name: str) -> set[int]:
        from netrain.track import mlflow_ship

        pairs = self.retry.call("read a metric's history",
                                lambda: mlflow_ship.logged_steps(self.client, run_id, [name]))
        return {step for _, step in pairs}

    def _send_parts(self, key: str, run_id: str, buf: Pending,
                    metrics: list[tuple[str, float, int, int]]) -> None:
        from netrain.track import mlflow_ship

        parts: list[tuple[str, list[Any], dict[str, str], dict[str, str]]] = [
            ("metrics", metrics, {}, {}), ("tags", [], {}, buf.tags)]
        parts += [("params", [], {k: v}, {}) for k, v in buf.params.items()]
        for what, m, p, t in parts:
            if not (m or p or t):
                continue

            def send(m: list[Any] = m, p: dict[str, str] = p, t: dict[str, str] = t) -> int:
                return int(mlflow_ship.log_batch(self.client, run_id, m, p, t))

            try:
                self.retry.call(f"send {what}", send)
            except GiveUp:
                raise
            except Exception as exc:
                self.record(key, what, buf.seqs, exc)
                continue
            self.report.add(metric_points=len(m), params=len(p), tags=len(t))

    # --- files, the end ------------------------------------------------------------------
    def artifacts(self, ev: dict[str, Any]) -> None:
        from netrain.track import mlflow_ship

        key = str(ev["key"])
        run_id = self.run_id(key)
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
            self.record(key, "artifacts", [seq] if isinstance(seq, int) else [],
                        f"files not found: {', '.join(missing)}")
        if files:
            n = self.retry.call("upload artifacts",
                                lambda: mlflow_ship.log_artifacts(self.client, run_id, files))
            self.report.add(artifacts=n)

    def end(self, ev: dict[str, Any]) -> None:
        from netrain.track import mlflow_ship

        key = str(ev["key"])
        run_id = self.run_id(key)
        if run_id is None:
            return
        status = str(ev.get("status") or "FINISHED")
        t = ev.get("t")
        self.retry.call("end a run", lambda: mlflow_ship.terminate(
            self.client, run_id, status, int(t) if isinstance(t, int) else None))
        self.report.add(ended=1)
        self.state.ended(key)
        if self.state.is_uncertain(key):
            self.reconcile(key)

    def reconcile(self, key: str) -> None:
        """Delete a second run of an uncertain create; forget the key once the create is
        old enough that no server can still be working on it."""
        from netrain.track import mlflow_ship

        experiment_id, when, *whole = self.state.uncertain()[key]
        run_id = self.state.run_id(key)
        if run_id is None:
            return
        n = self.retry.call("look for a second run", lambda: mlflow_ship.delete_duplicates(
            self.client, experiment_id, f"{self.batch_id}:{key}", run_id,
            with_data=bool(whole)))
        self.report.add(duplicates_deleted=n)
        if time.time() - float(when) > 2 * settings().http_timeout:
            self.state.settle(key)
