"""netrain submit: submit a batch's array jobs to SLURM and record the job ids."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, start_tasks


@click.command("submit")
@click.argument("batch")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--tasks", default=None, metavar="0-3,7", help="Only these array indices.")
@click.pass_obj
def command(obj, batch, models, tasks) -> None:
    """Submit BATCH (its unfinished tasks, or the selected ones) with sbatch."""
    from netrain.define.spec import parse_model_filter, parse_tasks

    keys = parse_model_filter(models) if models else None
    idx = parse_tasks(tasks) if tasks else None
    # Named tasks go exactly as named; without --tasks, finished ones stay out.
    start_tasks(obj, load_batch(obj, batch), "slurm", keys, idx, rerun=idx is not None)
