"""netrain cancel: scancel a batch's SLURM jobs (array jobs and retrains)."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, warn


@click.command("cancel")
@click.argument("batch")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--tasks", default=None, metavar="0-3,7",
              help="Only these array indices (their array tasks; retrains are left running).")
@click.pass_obj
def command(obj, batch, models, tasks) -> None:
    """Cancel BATCH's SLURM jobs, retrains included (all, or those of some models or tasks)."""
    from netrain.define.spec import parse_model_filter, parse_tasks
    from netrain.execute import executor, slurm

    keys = parse_model_filter(models) if models else None
    idx = parse_tasks(tasks) if tasks else None
    b = load_batch(obj, batch)
    ids = executor.slurm_job_ids(b, keys, idx)
    if not ids:
        warn(f"batch {b.id} has no SLURM jobs to cancel")
        return
    slurm.cancel(ids)
    warn(f"cancelled job(s) {', '.join(ids)}")
