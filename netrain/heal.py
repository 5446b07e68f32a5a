"""Healing dead tasks: when SLURM says a task (or a retrain) ended (TIMEOUT, CANCELLED,
OUT_OF_MEMORY, NODE_FAIL, ...), or a task run on this machine exited or is gone, while its
record still says running, it died without closing its MLflow runs. Close the runs, then
mark the record died.

A record is marked died only after its runs are closed: if tracking cannot be reached, the
record stays as it was and the next `show` tries again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from netrain.batch import Batch, now_iso, retrain_jobs
from netrain.errors import TrackingError
from netrain.records import (
    TaskRecord,
    read_model_records,
    read_record,
    read_retrain_records,
    record_path,
    write_record,
)
from netrain.status import BatchStatus, State, scheduler_state

KILLED_STATES = (State.CANCELLED, State.PREEMPTED)

#: close_runs(uri, run ids, status): closes the runs or raises TrackingError.
Closer = Callable[[str, list[str], str], object]


def _close_with_mlflow(uri: str, run_ids: list[str], status: str) -> object:
    from netrain import mlflow_store

    return mlflow_store.close_runs(uri, run_ids, status)


def _close_and_mark(batch: Batch, path: Path, rec: TaskRecord, run_status: str, error: str,
                    close: Closer) -> bool:
    """Close the task's runs that are still open, then write its record as died. False (and
    nothing written) when the runs could not be closed."""
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
    run_status = "KILLED" if returncode < 0 or returncode > 128 else "FAILED"
    return _close_and_mark(batch, path, rec, run_status,
                           f"the task process exited with code {returncode} before finishing "
                           f"(its runs closed as {run_status})", close)


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
                    healed += 1
            elif _gone_here(rec) and _close_and_mark(
                    batch, path, rec, "FAILED", "the task process is gone and never closed "
                    "its runs (closed as FAILED)", close):
                t.state, t.error = State.DIED, rec.error
                t.failed, t.running = t.failed + t.running, 0
                healed += 1
    if retrain_states:
        healed += _heal_retrains(batch, retrain_states, close)
        status.retrains = read_retrain_records(batch.path)
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
