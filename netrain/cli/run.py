"""netrain run: run a batch's array tasks on this machine (the local executor)."""

from __future__ import annotations

from pathlib import Path

import click

from netrain.cli.common import load_batch, warn


def start(obj, batch_ref: str | Path, executor: str, model_keys: list[str] | None,
          tasks: list[int] | None, workers: int | None, rerun: bool) -> None:
    """Run (local) or submit (slurm) the selected tasks; exit 1 if any failed."""
    from netrain import dispatch

    batch = load_batch(obj, str(batch_ref))
    models = dispatch.select_models(batch, model_keys)
    if executor == "slurm":
        from netrain import slurm

        slurm.submit_batch(batch, models, tasks, say=warn)
        return
    if workers is None:
        workers = obj.config(required=False).workers
    failures = dispatch.run_local(batch, models, tasks, workers, rerun=rerun, say=warn)
    if failures:
        raise click.exceptions.Exit(1)


@click.command("run")
@click.argument("batch")
@click.option("--workers", "-j", type=int, default=None,
              help="Tasks at a time (default: workers in netrain.yaml, else 2).")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--tasks", default=None, metavar="0-3,7", help="Only these array indices.")
@click.option("--rerun", is_flag=True, help="Also run tasks that already finished.")
@click.pass_obj
def command(obj, batch, workers, models, tasks, rerun) -> None:
    """Run BATCH's array tasks on this machine, exactly as SLURM would."""
    from netrain.spec import parse_model_filter, parse_tasks

    if workers is not None and workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    keys = parse_model_filter(models) if models else None
    idx = parse_tasks(tasks) if tasks else None
    start(obj, batch, "local", keys, idx, workers, rerun)
