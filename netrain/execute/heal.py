"""Healing dead tasks: when SLURM says a task (or a retrain) ended (TIMEOUT, CANCELLED,
OUT_OF_MEMORY, NODE_FAIL, ...), or a task run on this machine exited or is gone, while its
record still says running, it died without closing its runs. Close them, then mark the
record died.

A task that writes a journal has its open runs closed in that journal (as resumable when the
network has a checkpoint, lost otherwise); the shipper takes them to MLflow, now or at the
next `netrain sync`, so no run is left RUNNING even while tracking is down. An older record
(no journal) has its runs closed in MLflow directly; if tracking cannot be reached, it stays
as it was and the next `show` tries again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from netrain.define.batch import Batch, now_iso, retrain_jobs
from netrain.errors import TrackingError

if TYPE_CHECKING:
    from netrain.execute.executor import SchedulerView
from netrain.execute.records import (
    TaskRecord,
    read_model_records,
    read_record,
    record_path,
    write_record,
)
from netrain.execute.status import (
    BatchStatus,
    State,
    batch_status,
    retrain_records,
    scheduler_state,
    settle,
)

KILLED_STATES = (State.CANCELLED, State.PREEMPTED)

#: close_runs(uri, run ids, status): closes the runs or raises TrackingError.
Closer = Callable[[str, list[str], str], object]


def _close_with_mlflow(uri: str, run_ids: list[str], status: str) -> object:
    from netrain.track import mlflow_store

    return mlflow_store.close_runs(uri, run_ids, status)


def task_alive(batch_dir: Path, rec: TaskRecord) -> bool:
    """Whether a process still holds the task (the lock beside its journal)."""
    from netrain.execute.tasklock import held

    return bool(rec.journal) and held(batch_dir / rec.journal)


def close_in_journal(batch_dir: Path, rec: TaskRecord, why: str) -> None:
    """Close the runs a dead task left open, in its own journal: a network with a checkpoint
    is resumable (KILLED, resumed in the same run by the next attempt), one without is lost
    (FAILED); the task's run ends KILLED. The record's networks say the same."""
    from netrain.define import checkpoint
    from netrain.track.journal import JournalWriter, run_status

    path = batch_dir / rec.journal
    open_keys = [k for k, st in run_status(path).items() if st == "RUNNING"] \
        if path.is_file() else []
    by_key = {n.key: n for n in rec.nets.values() if n.key}
    with JournalWriter(path, batch_dir) as j:
        for key in open_keys:
            if key == rec.key:
                continue
            net = by_key.get(key)
            meta = checkpoint.read(batch_dir, net.stem, key) if net is not None else None
            if meta is not None:
                j.set_tags(key, {"netrain.state": "resumable",
                                 "netrain.resume_epoch": meta.epoch, "error": why[:500]})
                j.end_run(key, "KILLED")
            else:
                j.set_tags(key, {"netrain.state": "lost", "error": why[:500]})
                j.end_run(key, "FAILED")
        if rec.key in open_keys:
            j.set_tags(rec.key, {"netrain.state": "died", "error": why[:500]})
            j.end_run(rec.key, "KILLED")
    for n in rec.nets.values():
        if n.state == "running":
            meta = checkpoint.read(batch_dir, n.stem, n.key) if n.key else None
            n.state = "interrupted" if meta is not None else "lost"
            n.checkpoint_epoch = meta.epoch if meta is not None else 0


def ship_quietly(batch_dir: Path, rec: TaskRecord, uri: str, seconds: float = 10.0) -> None:
    """Try to ship a healed journal now; what does not go stays for `netrain sync`. The dead
    task's own follower may still hold the journal while it drains: wait for it (up to
    ``seconds``) rather than leave the closing events to the next sync."""
    import contextlib
    import time

    if not rec.journal or not uri:
        return
    with contextlib.suppress(Exception):
        from netrain.track.shipper import ship

        ship(batch_dir / rec.journal, batch_dir, uri, follow=lambda: False,
             deadline=time.monotonic() + seconds)


def mark_died(batch_dir: Path, path: Path, rec: TaskRecord, why: str, uri: str = "",
              ship_within: float = 10.0) -> None:
    """A task with a journal died: close its runs there, write its record, try to ship
    (for up to ``ship_within`` seconds)."""
    close_in_journal(batch_dir, rec, why)
    rec.state = "died"
    rec.ended = rec.ended or now_iso()
    rec.error = why
    write_record(path, rec)
    ship_quietly(batch_dir, rec, uri, ship_within)


def _close_and_mark(batch: Batch, path: Path, rec: TaskRecord, run_status: str, error: str,
                    close: Closer, ship_within: float = 10.0) -> bool:
    """Close the task's runs that are still open, then write its record as died. False (and
    nothing written) when the runs could not be closed, or the task still holds its lock."""
    if rec.journal:
        if task_alive(batch.path, rec):
            return False
        mark_died(batch.path, path, rec, error.split(" (closed as")[0].split(" (its runs")[0],
                  str(batch.manifest.tracking.get("uri", "")), ship_within)
        return True
    run_ids = [rec.parent_run_id] + [n.run_id for n in rec.nets.values()
                                    if n.state == "running" and n.run_id]
    try:
        close(batch.manifest.tracking["uri"], [r for r in run_ids if r], run_status)
    except TrackingError:
        return False
    rec.state = "died"
    rec.ended = rec.ended or now_iso()
    rec.error = error
    for n in rec.nets.values():
        if n.state == "running":
            n.state = "killed" if run_status == "KILLED" else "failed"
    write_record(path, rec)
    return True


def heal_record(batch: Batch, path: Path, rec: TaskRecord, word: str,
                close: Closer = _close_with_mlflow) -> bool:
    """One task SLURM reports ended with ``word`` (TIMEOUT, CANCELLED, ...)."""
    run_status = "KILLED" if scheduler_state(word) in KILLED_STATES else "FAILED"
    return _close_and_mark(batch, path, rec, run_status,
                           f"SLURM reports {word}: the task ended without closing its runs "
                           f"(closed as {run_status})", close)


def heal_exited(batch: Batch, path: Path, returncode: int,
                close: Closer = _close_with_mlflow) -> bool:
    """A task run here whose process exited with ``returncode`` while its record still says
    running (killed -9, out of memory, ...)."""
    rec = read_record(path)
    if returncode == 0 or rec is None or rec.state != "running":
        return False
    from netrain.track.plan import settings

    # its follower may still be draining the journal: wait for it as long as it may drain
    run_status = "KILLED" if returncode < 0 or returncode > 128 else "FAILED"
    return _close_and_mark(batch, path, rec, run_status,
                           f"the task process exited with code {returncode} before finishing "
                           f"(its runs closed as {run_status})", close,
                           settings().drain_timeout)


def _gone_here(rec: TaskRecord) -> bool:
    """A task this machine ran (not under SLURM) whose process no longer exists."""
    if rec.executor == "slurm" or rec.host != socket.gethostname() or rec.pid <= 0:
        return False
    try:
        os.kill(rec.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def heal(batch: Batch, status: BatchStatus, retrain_states: Mapping[str, str] | None = None,
         close: Closer = _close_with_mlflow) -> int:
    """Close the runs and records of the tasks (and retrains) that died; returns how many
    were healed. ``status`` is updated to match."""
    healed = 0
    by_key = {m.key: m for m in batch.manifest.models}
    for ms in status.models:
        dead = [t for t in ms.tasks if (t.scheduler and t.state.is_failure
                                         and scheduler_state(t.scheduler).is_failure)
                or (not t.scheduler and t.state is State.RUNNING)]
        if not dead:
            continue
        model = by_key[ms.key]
        records = read_model_records(batch.path, model.slug)
        for t in dead:
            rec = records.get(t.index)
            if rec is None or rec.state != "running":
                continue
            path = record_path(batch.path, model.slug, t.index)
            if t.scheduler:
                if heal_record(batch, path, rec, t.scheduler, close):
                    t.state, t.error = scheduler_state(t.scheduler), rec.error
                    settle(t, rec)
                    healed += 1
            elif _gone_here(rec) and _close_and_mark(
                    batch, path, rec, "FAILED", "the task process is gone and never closed "
                    "its runs (closed as FAILED)", close):
                t.state, t.error = State.DIED, rec.error
                t.failed, t.running = t.failed + t.running, 0
                settle(t, rec)
                healed += 1
    if retrain_states:
        healed += _heal_retrains(batch, retrain_states, close)
        status.retrains = retrain_records(batch.path)
    return healed


def _heal_retrains(batch: Batch, states: Mapping[str, str], close: Closer) -> int:
    healed = 0
    for r in retrain_jobs(batch):
        word = states.get(r.job_id, "")
        if not word or not scheduler_state(word).is_failure or not r.record:
            continue
        path = batch.path / r.record
        rec = read_record(path)
        if rec is not None and rec.state == "running" and heal_record(batch, path, rec, word,
                                                                       close):
            healed += 1
    return healed


def where_batches_stand(batches: list[Batch], ask_scheduler: bool = True,
                        skip: Callable[[Batch], str | None] | None = None,
                        say: Callable[[str], None] | None = None,
                        ) -> tuple[SchedulerView, list[BatchStatus]]:
    """The one way a command learns where its batches stand: SLURM's view of those that
    have SLURM jobs (unless ``ask_scheduler`` is false), each batch's status joined from its
    records and that view, and heal applied (the runs of tasks that died without a word
    closed in their journals). ``skip(batch)`` may give a reason to leave a batch unhealed
    (a moved batch, whose journals name another store); the reason goes to ``say``."""
    from netrain.execute import executor

    asked = [b for b in batches if executor.has_slurm_jobs(b)] if ask_scheduler else []
    view = executor.scheduler_view(asked)
    statuses = [batch_status(b, view.tasks.get(b.id)) for b in batches]
    for b, st in zip(batches, statuses, strict=True):
        why = skip(b) if skip is not None else None
        if why:
            if say is not None:
                say(why)
            continue
        heal(b, st, view.retrains.get(b.id))
    return view, statuses
