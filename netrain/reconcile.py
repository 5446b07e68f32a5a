"""Close what a dead task left open: when SLURM says a task ended (TIMEOUT, CANCELLED,
OUT_OF_MEMORY, NODE_FAIL, ...) but its record still says running, the task died without
closing its MLflow runs. Mark its record died and end its runs as FAILED or KILLED."""

from __future__ import annotations

import contextlib

from netrain.batch import Batch, now_iso
from netrain.records import read_model_records, record_path, write_record
from netrain.status import BatchStatus, State, scheduler_state

KILLED_STATES = (State.CANCELLED, State.PREEMPTED)


def heal(batch: Batch, status: BatchStatus) -> int:
    """Fix the records and runs of tasks that died; returns how many tasks were healed."""
    healed = 0
    by_key = {m.key: m for m in batch.manifest.models}
    for ms in status.models:
        dead = [t for t in ms.tasks if t.scheduler and t.state.is_failure
                and scheduler_state(t.scheduler).is_failure]
        if not dead:
            continue
        model = by_key[ms.key]
        records = read_model_records(batch.path, model.slug)
        for t in dead:
            rec = records.get(t.index)
            if rec is None or rec.state != "running":
                continue
            sched = scheduler_state(t.scheduler)
            run_status = "KILLED" if sched in KILLED_STATES else "FAILED"
            run_ids = [rec.parent_run_id] + [n.run_id for n in rec.nets.values()
                                            if n.state == "running" and n.run_id]
            with contextlib.suppress(Exception):
                from netrain import tracking

                tracking.close_runs(batch.manifest.tracking["uri"],
                                    [r for r in run_ids if r], run_status)
            rec.state = "died"
            rec.ended = rec.ended or now_iso()
            rec.error = (f"SLURM reports {t.scheduler}: the task ended without closing its "
                         f"runs (closed as {run_status})")
            for n in rec.nets.values():
                if n.state == "running":
                    n.state = "killed" if run_status == "KILLED" else "failed"
            write_record(record_path(batch.path, model.slug, t.index), rec)
            t.state = sched
            t.error = rec.error
            healed += 1
    return healed
