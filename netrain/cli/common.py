"""Helpers the command modules share: batch lookup, output, the local progress display, and
the one call into the executor."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from netrain import env as names
from netrain.cli.context import Context
from netrain.define.batch import Batch, find_batch

EXECUTOR = click.Choice(["local", "slurm"])
POSITIVE = click.IntRange(min=1)


def load_batch(obj: Context, ref: str | Path) -> Batch:
    return Batch.load(find_batch(str(ref), obj.trainings_dir()))


def say(text: str) -> None:
    click.echo(text)


def warn(text: str) -> None:
    click.echo(f"netrain: {text}", err=True)


class TaskProgress:
    """Local tasks as they end: click's progress bar on a terminal, else one line each."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.failed = 0
        #: (exit code, log) of each task as it ended: the first ones decide netrain check's hint
        self.ended: list[tuple[int, Path]] = []

    def begin(self, total: int) -> None:
        if sys.stderr.isatty():
            self.bar = click.progressbar(length=total, label="tasks", file=sys.stderr,
                                         show_pos=True, show_eta=False,
                                         item_show_func=lambda _: f"{self.failed} failed")
            self.bar.__enter__()

    def done(self, model_key: str, index: int, returncode: int, seconds: float, log: Path,
             finished: int, total: int, interrupted: str = "") -> None:
        ok = returncode == 0
        self.failed += 0 if ok or interrupted else 1
        if not interrupted:
            self.ended.append((returncode, log))
        from netrain.execute.check import killed_by

        signal = "" if ok or interrupted else killed_by(returncode)
        status = "ok" if ok else f"interrupted ({interrupted}), log: {log}" if interrupted \
            else f"KILLED by {signal} (exit {returncode}), log: {log}" if signal \
            else f"FAILED (exit {returncode}), log: {log}"
        line = f"[{finished}/{total}] {model_key} task {index}: {status} ({seconds:.1f} s)"
        if self.bar is None:
            warn(line)
            return
        if not ok:
            click.echo("\r\033[K" + line, err=True)
        self.bar.update(1)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def start_tasks(obj: Context, batch: Batch, executor: str, models: Sequence[str] | None = None,
                tasks: Sequence[int] | None = None, workers: int | None = None,
                rerun: bool = False) -> None:
    """Start the selected tasks through the executor; exit 1 if a local task failed."""
    from netrain.execute import executor as ex

    if workers is None:
        workers = obj.config(required=False).workers
    progress = TaskProgress()
    started = ex.start(batch, executor, ex.Selection.of(batch, models, tasks, not rerun),
                       workers=workers, say=warn, progress=progress,
                       project_uri=project_uri(obj))
    if executor == "local" and started.failures:
        from netrain.execute.check import first_failures_hint

        hint = first_failures_hint(progress.ended, len(progress.ended))
        if hint:
            warn(hint)
    if executor == "slurm" and started.jobs:
        _watch_first_tasks(batch, started.jobs)
    if started.failures or started.interrupted:
        raise click.exceptions.Exit(1)


def _watch_first_tasks(batch: Batch, jobs: Sequence[Any]) -> None:
    """After a submit, on a terminal (or with NETRAIN_WATCH_FIRST=SECONDS): follow the first
    tasks briefly and suggest netrain check when they all fail the same way."""
    import os

    from netrain.execute.check import watch_first_tasks
    from netrain.execute.slurm import expand_task_ids

    default = "30" if sys.stderr.isatty() else "0"
    try:
        seconds = float(os.environ.get(names.WATCH_FIRST, default))
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        return
    total = sum(len(expand_task_ids(j.indices)) for j in jobs)
    warn(f"watching the first tasks for up to {seconds:.0f} s (Ctrl-C stops watching, not the "
         f"tasks; {names.WATCH_FIRST}=0 turns this off)")
    try:
        hint = watch_first_tasks(batch.path, [j.job_id for j in jobs], total, seconds)
    except KeyboardInterrupt:
        return
    if hint:
        warn(hint + f"; netrain cancel {batch.id} stops the rest")


def project_uri(obj: Context) -> str | None:
    """The tracking store of the project netrain runs in (its netrain.yaml), if any: where
    a batch moved from another project is bound (netrain.relocate)."""
    cfg = obj.config(required=False)
    return str(cfg.tracking_uri) if getattr(cfg, "path", None) else None
