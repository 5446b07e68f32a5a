"""Send a batch's tasks to an executor: the local one (run now, here) or SLURM (submit)."""

from __future__ import annotations

import sys
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
    bar = ProgressBar(len(todo)) if sys.stderr.isatty() else None

    def progress(o: TaskOutcome, done: int, total: int) -> None:
        nonlocal failures
        ok = o.returncode == 0
        failures += 0 if ok else 1
        status = "ok" if ok else f"FAILED (exit {o.returncode}), log: {o.task.log}"
        line = (f"[{done}/{total}] {o.task.model_key} task {o.task.index}: {status} "
                f"({o.seconds:.1f} s)")
        if bar is None:
            say(line)
        else:
            bar.update(done, failures, None if ok else line)

    if bar is not None:
        bar.update(0, 0, None)
    try:
        run_tasks(todo, workers, progress, cwd=batch.path)
    finally:
        if bar is not None:
            bar.close()
    say(f"done in {time.monotonic() - start:.1f} s: {len(todo) - failures} ok, "
        f"{failures} failed")
    return failures


class ProgressBar:
    """A one-line progress bar on a terminal (plain lines are printed elsewhere)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total, self.width, self.start = total, width, time.monotonic()

    def update(self, done: int, failed: int, message: str | None) -> None:
        if message:
            sys.stderr.write("\r\033[K" + message + "\n")
        filled = int(self.width * done / max(1, self.total))
        elapsed = int(time.monotonic() - self.start)
        sys.stderr.write(f"\r\033[K[{'#' * filled}{'.' * (self.width - filled)}] "
                         f"{done}/{self.total} tasks, {failed} failed, "
                         f"{elapsed // 60}:{elapsed % 60:02d}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


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
