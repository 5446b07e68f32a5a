"""Send a batch's tasks to an executor: the local one (run now, here) or SLURM (submit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from netrain.batch import Batch, Job, ModelEntry, now_iso
from netrain.errors import BatchError
from netrain.records import read_model_records, record_path

Say = Callable[[str], None]


def select_models(batch: Batch, keys: list[str] | None) -> list[ModelEntry]:
    if not keys:
        return list(batch.manifest.models)
    return [batch.manifest.model(k) for k in keys]


def select_indices(model: ModelEntry, tasks: list[int] | None) -> list[int]:
    all_idx = [i for s in model.segments for i in range(s.start, s.stop)]
    if tasks is None:
        return all_idx
    bad = sorted(set(tasks) - set(all_idx))
    if bad:
        raise BatchError(f"{model.key} has no array task {bad[0]}: its tasks are "
                         f"0-{model.array - 1}")
    return [i for i in all_idx if i in set(tasks)]


def pending_indices(batch: Batch, model: ModelEntry, indices: list[int],
                    states: tuple[str, ...] = ("finished",)) -> list[int]:
    """Drop the indices whose record is in one of ``states`` (default: already finished)."""
    recs = read_model_records(batch.path, model.slug)
    return [i for i in indices if i not in recs or recs[i].state not in states]


def run_local(batch: Batch, models: list[ModelEntry], tasks: list[int] | None, workers: int,
              rerun: bool = False, say: Say = print) -> int:
    """Run the selected tasks here; returns the number of failed tasks."""
    from netrain.local import LocalTask, TaskOutcome, run_tasks

    todo: list[LocalTask] = []
    for model in models:
        indices = select_indices(model, tasks)
        if not rerun:
            indices = pending_indices(batch, model, indices)
        for i in indices:
            todo.append(LocalTask(
                model.key, i, batch.script_path(model),
                batch.path / "logs" / f"{model.slug}_local_{i}.out",
                record_path(batch.path, model.slug, i)))
    if not todo:
        say("nothing to run: every selected task has finished (use --rerun to train again)")
        return 0
    _record_local_job(batch, todo)
    say(f"running {len(todo)} task(s) of batch {batch.id} on this machine, "
        f"{workers} at a time; logs in {batch.path / 'logs'}")
    failures = 0
    start = time.monotonic()

    def progress(o: TaskOutcome, done: int, total: int) -> None:
        nonlocal failures
        ok = o.returncode == 0
        failures += 0 if ok else 1
        status = "ok" if ok else f"FAILED (exit {o.returncode}), log: {o.task.log}"
        say(f"[{done}/{total}] {o.task.model_key} task {o.task.index}: {status} "
            f"({o.seconds:.1f} s)")

    run_tasks(todo, workers, progress, cwd=batch.path)
    say(f"done in {time.monotonic() - start:.1f} s: {len(todo) - failures} ok, "
        f"{failures} failed")
    return failures


def run_script_local(batch: Batch, script: Path, index: int, model_key: str, log: Path,
                     record: Path) -> int:
    from netrain.local import LocalTask, run_tasks

    outcome = run_tasks([LocalTask(model_key, index, script, log, record)], 1, cwd=batch.path)
    return outcome[0].returncode


def _record_local_job(batch: Batch, todo: list) -> None:
    from netrain.spec import format_indices

    by_model: dict[str, list[int]] = {}
    for t in todo:
        by_model.setdefault(t.model_key, []).append(t.index)
    stamp = now_iso()
    with batch.locked() as b:
        for key, idx in by_model.items():
            b.manifest.model(key).jobs.append(Job(
                job_id=f"local-{int(time.time())}", indices=format_indices(idx),
                executor="local", submitted=stamp))
        b.save()
