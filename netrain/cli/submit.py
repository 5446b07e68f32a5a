"""netrain submit: submit a batch's array jobs to SLURM and record the job ids."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, warn


@click.command("submit")
@click.argument("batch")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--tasks", default=None, metavar="0-3,7", help="Only these array indices.")
@click.pass_obj
def command(obj, batch, models, tasks) -> None:
    """Submit BATCH (its unfinished tasks, or the selected ones) with sbatch."""
    from netrain import dispatch, slurm
    from netrain.spec import parse_model_filter, parse_tasks

    b = load_batch(obj, batch)
    selected = dispatch.select_models(b, parse_model_filter(models) if models else None)
    slurm.submit_batch(b, selected, parse_tasks(tasks) if tasks else None, say=warn)
