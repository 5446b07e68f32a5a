"""Starting a batch's tasks (here, or on SLURM) and the record of every job started, in batch.yaml.

The one door for `generate --run`, `add --run`, `run`, `submit`, `resubmit` and `retrain`:
``start(batch, executor, selection)``. It also answers which jobs a batch has (for `show`
and `cancel`), retrains included.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netrain import env as names
from netrain.define.batch import Batch, Job, ModelEntry, now_iso, retrain_jobs
from netrain.define.spec import format_indices, parse_tasks
from netrain.errors import BatchError, SchedulerError, UsageError
from netrain.execute.heal import heal_exited
from netrain.execute.records import new_retrain_key, read_model_records, record_path
from netrain.track import plan as ship_plan
from netrain.track.journal import journal_path
from netrain.track.sync import Courier

EXECUTORS = ("local", "slurm")

Say = Callable[[str], None]


@dataclass(frozen=True)
class Retrain:
    """One network trained again: its script (scripts/retrain-*.sh) and where it came from."""

    script: Path
    model: str
    index: int
    run_id: str


@dataclass(frozen=True)
class Selection:
    """Which tasks to start: model key -> indices (None: all its tasks), or one retrain."""

    tasks: Mapping[str, Sequence[int] | None] = field(default_factory=dict)
    #: Leave out tasks whose record says finished (run without --rerun, submit without --tasks).
    skip_finished: bool = True
    retrain: Retrain | None = None
    #: Train the selected tasks that finished again, from scratch in new runs (run --rerun,
    #: submit --tasks); None: whenever finished tasks are not skipped. Unfinished tasks
    #: always resume from their checkpoints in their runs (resubmit --failed).
    rerun: bool | None = None

    @property
    def fresh(self) -> bool:
        return not self.skip_finished if self.rerun is None else self.rerun

    @classmethod
    def of(cls, batch: Batch, models: Sequence[str] | None = None,
           tasks: Sequence[int] | None = None, skip_finished: bool = True) -> Selection:
        """The given models (default all) and indices (default all) of ``batch``."""
        keys = [m.key for m in select_models(batch, models)]
        return cls({k: (list(tasks) if tasks is not None else None) for k in keys},
                   skip_finished)

    @classmethod
    def retraining(cls, retrain: Retrain) -> Selection:
        return cls({}, skip_finished=False, retrain=retrain)


@dataclass
class Started:
    """What ``start`` did: the jobs it recorded; for the local executor, how tasks ended."""

    jobs: list[Job] = field(default_factory=list)
    ran: int = 0
    failures: int = 0
    #: local tasks stopped by a signal that checkpointed: resumable, not failed
    interrupted: int = 0
    logs: list[Path] = field(default_factory=list)


class Progress(Protocol):
    """How the caller hears about local tasks: ``begin(total)``, ``done(...)``, ``end()``."""

    def begin(self, total: int) -> None: ...

    def done(self, model_key: str, index: int, returncode: int, seconds: float, log: Path,
             finished: int, total: int, interrupted: str = "") -> None: ...

    def end(self) -> None: ...


# ----------------------------------------------------------------------------- selection

def select_models(batch: Batch, keys: Sequence[str] | None) -> list[ModelEntry]:
    if not keys:
        return list(batch.manifest.models)
    return [batch.manifest.model(k) for k in keys]


def select_indices(model: ModelEntry, tasks: Sequence[int] | None) -> list[int]:
    all_idx = [i for s in model.segments for i in range(s.start, s.stop)]
    if tasks is None:
        return all_idx
    have = set(all_idx)
    bad = sorted(set(tasks) - have)
    if bad:
        raise BatchError(f"{model.key} has no array task {bad[0]}: its tasks are "
                         f"0-{model.array - 1}")
    wanted = set(tasks)
    return [i for i in all_idx if i in wanted]


def pending_indices(batch: Batch, model: ModelEntry, indices: list[int]) -> list[int]:
    """Drop the indices whose record says finished."""
    recs = read_model_records(batch.path, model.slug)
    return [i for i in indices if i not in recs or recs[i].state != "finished"]


def default_executor(batch: Batch) -> str:
    """Where a batch's earlier jobs went: SLURM if any went there, else this machine."""
    slurm_jobs = any(j.executor == "slurm" for m in batch.manifest.models for j in m.jobs)
    return "slurm" if slurm_jobs else "local"


def new_local_job_id() -> str:
    """``local-YYYYmmddHHMMSS-xxxxxx``: unique even for two runs in one second."""
    return f"local-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------------- start

def start(batch: Batch, executor: str, selection: Selection, *, workers: int = 1,
          say: Say = print, progress: Progress | None = None,
          runner: Any = None, project_uri: str | None = None) -> Started:
    """Start the selected tasks on ``executor`` ("local" runs them here now and waits;
    "slurm" submits them) and record every job in batch.yaml. A batch moved from where it
    was made is bound to where it lies first (its tracking to ``project_uri``, the current
    project's store, when it named another one)."""
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}: use local or slurm")
    from netrain.execute.relocate import rebind

    batch = rebind(batch, project_uri, say)
    if selection.retrain is not None:
        return _start_retrain(batch, executor, selection.retrain, say, runner)
    plan: list[tuple[ModelEntry, list[int]]] = []
    for key, tasks in selection.tasks.items():
        model = batch.manifest.model(key)
        indices = select_indices(model, tasks)
        if selection.skip_finished:
            indices = pending_indices(batch, model, indices)
        plan.append((model, indices))
    if executor == "slurm":
        return _submit(batch, plan, say, runner, rerun=selection.fresh)
    return _run_here(batch, plan, workers, say, progress, rerun=selection.fresh)


def _submit(batch: Batch, plan: list[tuple[ModelEntry, list[int]]], say: Say,
            runner: Any, rerun: bool = False) -> Started:
    from netrain.execute import slurm

    throttle = batch.manifest.slurm.get("max_running")
    out = Started()
    shipping = shipping_plan(batch, "slurm", tasks=sum(len(indices) for _, indices in plan))
    sync = _sync_job(batch) if shipping.sync_job else None
    env = shipping.task_env() if sync is not None else {}
    if shipping.warning:
        say(shipping.warning)
    if rerun:  # a named task that finished trains again in new runs; the others resume
        env[names.RERUN] = "finished"
    for model, indices in plan:
        if not indices:
            say(f"{model.key}: nothing to submit")
            continue
        arrays = slurm.submit_array(str(batch.script_path(model)), indices, throttle=throttle,
                                    runner=runner, env=env or None)
        jobs = [Job(job_id=a.job_id, indices=format_indices(a.indices), executor="slurm",
                    submitted=now_iso(), offset=a.offset) for a in arrays]
        with batch.locked() as b:
            b.manifest.model(model.key).jobs.extend(jobs)
            b.save()
        for j in jobs:
            say(f"{model.key}: submitted array job {j.job_id} (tasks {j.indices})")
        out.jobs.extend(jobs)
    if sync is not None and out.jobs:
        options, command = sync
        try:
            job_id = slurm.submit_after([j.job_id for j in out.jobs], options, command,
                                        runner=runner)
            say(f"submitted sync job {job_id}: ships the journals " +
                ("of the tasks once the arrays end (the SQLite store's one writer; "
                 f"netrain sync --follow {batch.id} ships them as they grow)"
                 if shipping.one_writer else "of short tasks once the arrays end"))
        except SchedulerError as exc:  # the tasks are submitted; what they leave waits
            say(f"{exc}; run netrain sync {batch.id} once the arrays end")
    return out


def shipping_plan(batch: Batch, executor: str, tasks: int = 1,
                  retrain: bool = False) -> ship_plan.Plan:
    """Who ships the journals of the tasks about to start (netrain.track.plan decides)."""
    m = batch.manifest
    return ship_plan.decide(ship_plan.Facts(
        executor=executor, uri=str(m.tracking.get("uri") or ""), tasks=tasks,
        retrain=retrain, launcher=m.launcher, env_kind=str(m.environment.get("kind", ""))))


def _sync_job(batch: Batch) -> tuple[list[str], str] | None:
    """The batch's sync job (render.sync_job), when its tasks can leave shipping to it."""
    from netrain.define import scripts as render
    from netrain.define.builder import script_spec

    m = batch.manifest
    if not m.models or not m.tracking.get("uri"):
        return None
    return render.sync_job(script_spec(batch.path, m, m.models[0]))


def _run_here(batch: Batch, plan: list[tuple[ModelEntry, list[int]]], workers: int, say: Say,
              progress: Progress | None, rerun: bool = False) -> Started:
    from netrain.execute.local import LocalTask, TaskOutcome, run_tasks

    # unfinished tasks resume from their checkpoints in their runs; --rerun starts over in
    # new runs (NETRAIN_RERUN tells the task)
    env: tuple[tuple[str, str], ...] = ((names.RERUN, "1"),) if rerun else ()
    shipping = shipping_plan(batch, "local", tasks=sum(len(indices) for _, indices in plan))
    env += tuple(shipping.task_env().items())
    todo = [LocalTask(model.key, i, batch.script_path(model),
                      batch.path / "logs" / f"{model.slug}_local_{i}.log",
                      record_path(batch.path, model.slug, i), env)
            for model, indices in plan for i in indices]
    out = Started()
    if not todo:
        say("nothing to run: every selected task has finished (use --rerun to train again)")
        return out
    out.jobs = _record_local_jobs(batch, todo)
    say(f"running {len(todo)} task(s) of batch {batch.id} on this machine, "
        f"{workers} at a time; logs in {batch.path / 'logs'}")
    begun = time.monotonic()

    def one_done(o: TaskOutcome, finished: int, total: int) -> None:
        out.ran += 1
        stopped = interrupted(o.task.record, o.returncode)
        if stopped:
            out.interrupted += 1
        elif o.returncode != 0:
            out.failures += 1
        if progress is not None:
            progress.done(o.task.model_key, o.task.index, o.returncode, o.seconds, o.task.log,
                          finished, total, stopped)

    uri = str(batch.manifest.tracking.get("uri") or "")
    courier = Courier(batch.path, uri) if shipping.courier else None
    slugs = {m.key: m.slug for m, _ in plan}
    heal_it = _healer(batch)

    def ended(task: Any, returncode: int) -> None:
        heal_it(task, returncode)
        if courier is not None:
            courier.give(journal_path(batch.path, slugs[task.model_key], task.index))

    if progress is not None:
        progress.begin(len(todo))
    try:
        run_tasks(todo, workers, one_done, cwd=batch.path, on_exit=ended)
    except OSError as exc:  # our own write (a task's record as it ended): stop cleanly
        what = f"cannot write {exc.filename}" if exc.filename else "a write failed"
        raise BatchError(f"{what}: {exc.strerror or exc}; the tasks running were stopped and "
                         f"keep their checkpoints: netrain run {batch.id} resumes them once "
                         "this is fixed") from None
    finally:
        if progress is not None:
            progress.end()
        if courier is not None:
            left = courier.finish(shipping.settings.drain_timeout)
            if left:
                say(f"{len(left)} journal(s) not shipped to MLflow yet (tracking "
                    f"unreachable?): ship them with: netrain sync {batch.id}")
    ok = out.ran - out.failures - out.interrupted
    stopped = f", {out.interrupted} interrupted (resumable: netrain run {batch.id} resumes " \
        "them)" if out.interrupted else ""
    say(f"done in {time.monotonic() - begun:.1f} s: {ok} ok, {out.failures} failed{stopped}")
    return out


def interrupted(record: Path, returncode: int) -> str:
    """How a task stopped by a signal (SIGTERM, USR1, Ctrl-C) left itself, if it did: its
    record says killed, its networks checkpointed ("" for any other end)."""
    from netrain.execute.records import read_record

    if returncode == 0:
        return ""
    rec = read_record(record)
    if rec is None or rec.state != "killed":
        return ""
    epochs = [n.checkpoint_epoch for n in rec.nets.values() if n.state == "interrupted"]
    where = f" at epoch {epochs[0]}" if epochs else ""
    return f"{rec.error or 'stopped by a signal'}; resumable{where}"


def _healer(batch: Batch) -> Callable[[Any, int], object]:
    """What to do as a local task's process ends: a task that died without closing its
    record gets its runs closed, then its record marked died."""
    return lambda task, returncode: heal_exited(batch, task.record, returncode)


def _record_local_jobs(batch: Batch, todo: list[Any]) -> list[Job]:
    by_model: dict[str, list[int]] = {}
    for t in todo:
        by_model.setdefault(t.model_key, []).append(t.index)
    job_id, stamp = new_local_job_id(), now_iso()
    jobs = []
    with batch.locked() as b:
        for key, idx in by_model.items():
            job = Job(job_id=job_id, indices=format_indices(idx), executor="local",
                      submitted=stamp)
            b.manifest.model(key).jobs.append(job)
            jobs.append(job)
        b.save()
    return jobs


def _start_retrain(batch: Batch, executor: str, r: Retrain, say: Say, runner: Any) -> Started:
    model = batch.manifest.model(r.model)
    key = new_retrain_key(r.run_id)
    record = record_path(batch.path, model.slug, r.index, key)
    env = {names.RETRAIN_KEY: key}
    out = Started()
    if executor == "slurm":
        from netrain.execute import slurm

        shipping = shipping_plan(batch, "slurm", retrain=True)
        sync = _sync_job(batch) if shipping.sync_job else None
        if sync is not None:
            env.update(shipping.task_env())
        arrays = slurm.submit_array(str(r.script), [r.index], runner=runner, env=env)
        job_id, offset = arrays[0].job_id, arrays[0].offset
        say(f"submitted job {job_id}")
        if sync is not None:
            try:
                sync_id = slurm.submit_after([job_id], sync[0], sync[1], runner=runner)
                say(f"submitted sync job {sync_id}: ships its journal once it ends")
            except SchedulerError as exc:
                say(f"{exc}; run netrain sync {batch.id} once it ends")
    else:
        job_id, offset = new_local_job_id(), 0
    job = Job(job_id=job_id, indices=str(r.index), executor=executor, submitted=now_iso(),
              offset=offset)
    _record_retrain_job(batch, r, job, record)
    out.jobs.append(job)
    if executor == "slurm":
        return out
    from netrain.execute.local import LocalTask, run_tasks

    log = batch.path / "logs" / f"{r.script.stem}_local.log"
    outcome = run_tasks([LocalTask(model.key, r.index, r.script, log, record,
                                   tuple(env.items()))], 1, cwd=batch.path,
                        on_exit=_healer(batch))
    out.ran, out.failures, out.logs = 1, int(outcome[0].returncode != 0), [log]
    return out


def _record_retrain_job(batch: Batch, r: Retrain, job: Job, record: Path) -> None:
    script = str(r.script.relative_to(batch.path)) if r.script.is_relative_to(batch.path) \
        else str(r.script)
    with batch.locked() as b:
        entry = next((e for e in reversed(b.manifest.retrains) if e.get("script") == script),
                     None)
        if entry is None:
            entry = {"of": r.run_id, "model": r.model, "trainingrun": r.index,
                     "script": script, "created": now_iso()}
            b.manifest.retrains.append(entry)
        entry.setdefault("jobs", []).append({
            "job_id": job.job_id, "executor": job.executor, "submitted": job.submitted,
            "offset": job.offset, "record": str(record.relative_to(b.path))})
        b.save()


# ------------------------------------------------------------------ the jobs of a batch

def slurm_job_ids(batch: Batch, models: Sequence[str] | None = None,
                  tasks: Sequence[int] | None = None) -> list[str]:
    """Every SLURM job of the batch (or of some models): array jobs and retrains. With
    ``tasks``, only those array tasks, as ``JOBID_INDEX`` (SLURM's index: the batch index
    less the job's offset)."""
    keys = {m.key for m in select_models(batch, models)}
    if tasks is not None:
        wanted = set(tasks)
        return list(dict.fromkeys(
            f"{j.job_id}_{i - j.offset}" for m in batch.manifest.models if m.key in keys
            for j in m.jobs if j.executor == "slurm"
            for i in parse_tasks(j.indices) if i in wanted))
    ids = [j.job_id for m in batch.manifest.models if m.key in keys for j in m.jobs
           if j.executor == "slurm"]
    ids += [r.job_id for r in retrain_jobs(batch) if r.executor == "slurm" and r.model in keys]
    return list(dict.fromkeys(ids))


def task_jobs(batch: Batch) -> dict[str, tuple[str, int]]:
    """{SLURM job id: (model key, index offset)} for the batch's array jobs."""
    out: dict[str, tuple[str, int]] = {}
    for m in batch.manifest.models:
        for j in m.jobs:
            if j.executor == "slurm":
                out[j.job_id] = (m.key, j.offset)
    out.update(runbatch_jobs(batch))
    return out


def runbatch_jobs(batch: Batch) -> dict[str, tuple[str, int]]:
    """Jobs submitted by hand with runbatch.sh or a model's script (records/runbatch-jobs.txt:
    "model job" per line)."""
    try:
        text = (batch.path / "records" / "runbatch-jobs.txt").read_text(encoding="utf-8")
    except OSError:
        return {}
    keys = {m.key for m in batch.manifest.models}
    out: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in keys and parts[1].isdigit():
            out[parts[1]] = (parts[0], 0)
    return out


def has_slurm_jobs(batch: Batch) -> bool:
    return bool(task_jobs(batch)) or any(r.executor == "slurm" for r in retrain_jobs(batch))


@dataclass
class SchedulerView:
    """What SLURM says about the jobs of some batches."""

    #: {batch id: {model key: {index: (job id, SLURM state)}}}
    tasks: dict[str, dict[str, dict[int, tuple[str, str]]]] = field(default_factory=dict)
    #: {batch id: {retrain job id: SLURM state}}
    retrains: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""


def scheduler_view(batches: Sequence[Batch], runner: Any = None) -> SchedulerView:
    """One squeue and one sacct call for all jobs of all batches."""
    from netrain.execute import slurm

    owners: dict[str, tuple[str, str, int]] = {}
    retrain_owner: dict[str, str] = {}
    for b in batches:
        for job, (key, off) in task_jobs(b).items():
            owners[job] = (b.id, key, off)
        for r in retrain_jobs(b):
            if r.executor == "slurm":
                retrain_owner[r.job_id] = b.id
    view = SchedulerView()
    if not owners and not retrain_owner:
        return view
    states, view.note = slurm.job_states([*owners, *retrain_owner], runner=runner)
    for job in sorted(states, key=lambda j: int(j) if j.isdigit() else 0):
        if job in retrain_owner:
            word = next(iter(states[job].values()), "")
            view.retrains.setdefault(retrain_owner[job], {})[job] = word
        if job not in owners:
            continue
        bid, key, off = owners[job]
        dest = view.tasks.setdefault(bid, {}).setdefault(key, {})
        for t, state in states[job].items():
            if t >= 0:
                dest[t + off] = (job, state)  # a later job of the same index wins
    return view
