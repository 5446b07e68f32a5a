"""netrain cancel: scancel a batch's SLURM jobs (array jobs and retrains)."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, warn


@click.command("cancel")
@click.argument("batch")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.pass_obj
def command(obj, batch, models) -> None:
    """Cancel BATCH's SLURM jobs, retrains included (all, or those of some models)."""
    from netrain.define.spec import parse_model_filter
    from netrain.execute import executor, slurm

    b = load_batch(obj, batch)
    ids = executor.slurm_job_ids(b, parse_model_filter(models) if models else None)
    if not ids:
        warn(f"batch {b.id} has no SLURM jobs to cancel")
        return
    slurm.cancel(ids)
    warn(f"cancelled job(s) {', '.join(ids)}")
