"""netrain run: run a batch's array tasks on this machine (the local executor)."""

from __future__ import annotations

import click

from netrain.cli.common import POSITIVE, load_batch, start_tasks


@click.command("run")
@click.argument("batch")
@click.option("--workers", "-j", type=POSITIVE, default=None,
              help="Tasks at a time (default: workers in netrain.yaml, else 2).")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--tasks", default=None, metavar="0-3,7", help="Only these array indices.")
@click.option("--rerun", is_flag=True,
              help="Run the selected tasks again from scratch, finished ones too: new MLflow "
              "runs, checkpoints ignored (a plain run resumes unfinished networks instead).")
@click.pass_obj
def command(obj, batch, workers, models, tasks, rerun) -> None:
    """Run BATCH's array tasks on this machine, exactly as SLURM would."""
    from netrain.define.spec import parse_model_filter, parse_tasks

    keys = parse_model_filter(models) if models else None
    idx = parse_tasks(tasks) if tasks else None
    start_tasks(obj, load_batch(obj, batch), "local", keys, idx, workers, rerun)
