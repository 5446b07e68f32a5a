"""netrain show: where every batch stands, or one batch per model and task."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, say


@click.command("show")
@click.argument("batch", required=False)
@click.option("--all", "all_tasks", is_flag=True, help="List every task, not only the "
              "unfinished and failed ones.")
@click.option("--no-scheduler", is_flag=True, help="Do not ask SLURM (records only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def command(obj, batch, all_tasks, no_scheduler, as_json) -> None:
    """Without BATCH: one line per batch. With BATCH: per model and per task."""
    from netrain import report

    if batch is None:
        trainings = obj.trainings_dir()
        if trainings is None:
            obj.config()  # raises the "no netrain.yaml" error
        say(report.overview(trainings, scheduler=not no_scheduler, as_json=as_json))
        return
    b = load_batch(obj, batch)
    say(report.detail(b, all_tasks=all_tasks, scheduler=not no_scheduler, as_json=as_json))
