"""Join the manifest, the tasks' own records and (optionally) the scheduler's view into one
status table per batch. Pure functions over plain data, plus the record reading."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from netrain.define.batch import Batch, ModelEntry
from netrain.execute.records import TaskRecord, read_model_records, read_retrain_records


class State(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"
    DIED = "died"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    PREEMPTED = "preempted"
    NODE_FAIL = "node_fail"
    #: stopped (signal, time limit, kill) with its unfinished networks checkpointed: the next
    #: attempt (netrain run, resubmit --failed, a SLURM requeue) resumes them in their runs
    RESUMABLE = "resumable"
    #: ended without a word and without a checkpoint to resume from
    LOST = "lost"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self not in (State.PENDING, State.RUNNING, State.UNKNOWN)

    @property
    def is_failure(self) -> bool:
        return self.is_terminal and self is not State.FINISHED


@dataclass
class TaskStatus:
    model: str
    index: int
    state: State
    nets: int
    finished: int = 0
    failed: int = 0
    running: int = 0
    log: str = ""
    error: str = ""
    run_id: str = ""
    scheduler: str = ""  # the scheduler's own word, e.g. "TIMEOUT", "PENDING"
    slurm_job_id: str = ""
    attempt: int = 0
    resumable: int = 0  # networks waiting in a checkpoint
    resume_epoch: int = 0  # the lowest epoch a resumable network reached
    lost: int = 0
    events_waiting: bool = False  # tracking events not yet shipped to MLflow


@dataclass
class ModelStatus:
    key: str
    tasks: list[TaskStatus] = field(default_factory=list)

    @property
    def planned(self) -> int:
        return sum(t.nets for t in self.tasks)

    def count(self, attr: str) -> int:
        return sum(getattr(t, attr) for t in self.tasks)

    def tasks_in(self, *states: State) -> int:
        return sum(1 for t in self.tasks if t.state in states)


@dataclass
class BatchStatus:
    id: str
    path: Path
    created: str
    description: str
    models: list[ModelStatus]
    retrains: list[TaskRecord] = field(default_factory=list)
    code_edited: bool = False

    @property
    def planned(self) -> int:
        return sum(m.planned for m in self.models)

    def count(self, attr: str) -> int:
        return sum(m.count(attr) for m in self.models)


def settle(st: TaskStatus, rec: TaskRecord | None) -> None:
    """A stopped task (not an error of the user's code) is resumable when its unfinished
    networks have checkpoints, lost when they have none."""
    if rec is None or not st.state.is_failure or st.state in (State.FAILED,):
        return
    interrupted = [n for n in rec.nets.values() if n.state == "interrupted"]
    st.resumable = len(interrupted)
    st.lost = sum(1 for n in rec.nets.values() if n.state == "lost")
    if interrupted:
        st.state = State.RESUMABLE
        st.resume_epoch = min(n.checkpoint_epoch for n in interrupted)
        st.running = 0
    elif st.lost:
        st.state = State.LOST


def task_status(model: ModelEntry, index: int, rec: TaskRecord | None,
                scheduler: tuple[str, str] | None = None) -> TaskStatus:
    """One task's state from its record, corrected by what the scheduler says (if known).

    ``scheduler`` is (SLURM job id, state) of the newest job that holds this index.
    """
    nnets = model.segment_for(index).nnets
    if rec is None:
        st = TaskStatus(model.key, index, State.PENDING, nnets)
    else:
        counts = rec.counts()
        failed = counts.get("failed", 0) + counts.get("killed", 0) + counts.get("lost", 0)
        state = {"running": State.RUNNING, "finished": State.FINISHED, "failed": State.FAILED,
                 "killed": State.KILLED, "died": State.DIED}.get(rec.state, State.UNKNOWN)
        st = TaskStatus(model.key, index, state, nnets, finished=counts.get("finished", 0),
                        failed=failed, running=counts.get("running", 0), log=rec.log,
                        error=rec.error, run_id=rec.parent_run_id,
                        slurm_job_id=rec.slurm_job_id, attempt=rec.attempt)
    if scheduler:
        job, word = scheduler
        st.scheduler = word
        own = st.state
        if rec is not None and rec.slurm_job_id.split("_")[0] != job:
            # The record is from an earlier attempt (or a local run): a newer job decides,
            # unless it finished without writing a record of its own.
            own = State.PENDING if scheduler_state(word) is not State.FINISHED else own
            if scheduler_state(word) in (State.PENDING, State.RUNNING):
                st.finished = st.failed = st.running = 0
        st.state = reconcile(own, word)
        if st.state.is_failure and st.running:
            st.failed += st.running
            st.running = 0
    settle(st, rec)
    return st


# The scheduler's word for a task -> what netrain shows.
SCHEDULER_STATES = {
    "PENDING": State.PENDING, "CONFIGURING": State.PENDING, "REQUEUED": State.PENDING,
    "REQUEUE_HOLD": State.PENDING, "REQUEUE_FED": State.PENDING, "RESV_DEL_HOLD": State.PENDING,
    "SUSPENDED": State.PENDING, "STOPPED": State.PENDING,
    "RUNNING": State.RUNNING, "COMPLETING": State.RUNNING, "SIGNALING": State.RUNNING,
    "STAGE_OUT": State.RUNNING, "RESIZING": State.RUNNING,
    "COMPLETED": State.FINISHED,
    "FAILED": State.FAILED, "BOOT_FAIL": State.FAILED, "DEADLINE": State.TIMEOUT,
    "TIMEOUT": State.TIMEOUT, "OUT_OF_MEMORY": State.OUT_OF_MEMORY,
    "NODE_FAIL": State.NODE_FAIL, "CANCELLED": State.CANCELLED, "PREEMPTED": State.PREEMPTED,
    "REVOKED": State.CANCELLED, "SPECIAL_EXIT": State.FAILED,
}


def scheduler_state(word: str) -> State:
    return SCHEDULER_STATES.get(word.split()[0].upper().rstrip("+"), State.UNKNOWN) if word \
        else State.UNKNOWN


def reconcile(own: State, scheduler: str) -> State:
    """The task's own record wins when it closed itself; otherwise the scheduler decides.

    A task the scheduler ended (TIMEOUT, CANCELLED, ...) while its record still says
    running died without closing its runs: shown as the scheduler's state.
    """
    sched = scheduler_state(scheduler)
    if own in (State.FINISHED, State.FAILED, State.KILLED):
        if own is State.KILLED and sched in (State.PENDING, State.RUNNING):
            return sched  # requeued after its time-limit warning: the next attempt is on
        return own
    if sched is State.UNKNOWN:
        return own
    if sched is State.FINISHED and own is State.RUNNING:
        return State.DIED  # exited 0 but never closed its record
    if sched is State.FINISHED and own is State.PENDING:
        return State.DIED
    if own is State.DIED and not sched.is_terminal:
        return sched
    if own is State.DIED and sched is State.FAILED:
        return State.DIED
    return sched


def _tracking(batch_dir: Path, st: TaskStatus, rec: TaskRecord | None) -> None:
    """The task's MLflow run (once shipped) and whether events wait to be shipped."""
    if rec is None or not rec.journal:
        return
    from netrain.track.journal import read_state, unshipped_bytes

    path = batch_dir / rec.journal
    st.run_id = st.run_id or str(read_state(path).get("runs", {}).get(rec.key, ""))
    st.events_waiting = unshipped_bytes(path) > 0


def model_status(batch: Batch, model: ModelEntry,
                 scheduler: dict[int, tuple[str, str]] | None = None) -> ModelStatus:
    records = read_model_records(batch.path, model.slug)
    ms = ModelStatus(model.key)
    sched = scheduler or {}
    for seg in model.segments:
        for i in range(seg.start, seg.stop):
            st = task_status(model, i, records.get(i), sched.get(i))
            _tracking(batch.path, st, records.get(i))
            ms.tasks.append(st)
    return ms


def batch_status(batch: Batch,
                 scheduler: dict[str, dict[int, tuple[str, str]]] | None = None) -> BatchStatus:
    m = batch.manifest
    sched = scheduler or {}
    return BatchStatus(
        id=m.id, path=batch.path, created=m.created, description=m.description,
        models=[model_status(batch, model, sched.get(model.key)) for model in m.models],
        retrains=retrain_records(batch.path),
    )


def retrain_records(batch_dir: Path) -> list[TaskRecord]:
    """The batch's retrain records, each network's MLflow run id filled in from its
    journal's shipping state once shipped (the task never learns it: the shipper does)."""
    from netrain.track.journal import read_state

    recs = read_retrain_records(batch_dir)
    for rec in recs:
        if not rec.journal:
            continue
        runs = read_state(batch_dir / rec.journal).get("runs", {})
        rec.parent_run_id = rec.parent_run_id or str(runs.get(rec.key, ""))
        for n in rec.nets.values():
            n.run_id = n.run_id or str(runs.get(n.key, ""))
    return recs


def code_edited(batch: Batch) -> bool:
    """Whether the batch's code snapshot changed since generate (digest comparison)."""
    from netrain.define.snapshot import digest_dir

    want = batch.manifest.code.get("digest")
    if not want or not (batch.path / "code").is_dir():
        return False
    try:
        return digest_dir(batch.path / "code") != want
    except OSError:
        return False


def batch_active(batch: Batch) -> bool:
    """Whether any task (or retrain) of the batch is queued or running, here or on SLURM
    (a task that died without a word is healed first, so it is not waited for)."""
    from netrain.execute.heal import where_batches_stand

    view, (status,) = where_batches_stand([batch])
    retrains = view.retrains.get(batch.id)
    for m in status.models:
        for t in m.tasks:
            if t.state is State.RUNNING or (t.state is State.PENDING and t.scheduler):
                return True
    return any(scheduler_state(w) in (State.PENDING, State.RUNNING)
               for w in (retrains or {}).values())
