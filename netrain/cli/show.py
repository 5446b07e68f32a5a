"""netrain show: where every batch stands, or one batch per model and task."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, say, warn


@click.command("show")
@click.argument("batch", required=False)
@click.option("--all", "all_tasks", is_flag=True, help="List every task, not only the "
              "unfinished and failed ones.")
@click.option("--no-scheduler", is_flag=True, help="Do not ask SLURM (records only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def command(obj, batch, all_tasks, no_scheduler, as_json) -> None:
    """Without BATCH: one line per batch. With BATCH: per model and per task.

    Tasks that died while their records say running (SLURM saw them end, or their process
    on this machine is gone) get their MLflow runs closed and their records marked died.
    """
    from netrain.define.batch import load_batches
    from netrain.execute.heal import where_batches_stand
    from netrain.results import show as report

    if batch is None:
        trainings = obj.trainings_dir()
        if trainings is None:
            obj.config()  # raises the "no netrain.yaml" error
        batches, broken = load_batches(trainings)
    else:
        batches, broken = [load_batch(obj, batch)], []
    from netrain.execute.relocate import flag

    # a moved batch is not healed: healing would ship to the store it named where it was
    view, statuses = where_batches_stand(batches, not no_scheduler, skip=flag, say=warn)
    if batch is None:
        say(report.overview(statuses, trainings, broken, view.note, as_json))
    else:
        from netrain.execute.status import code_edited

        statuses[0].code_edited = code_edited(batches[0])  # hashes the snapshot: one batch
        say(report.detail(batches[0], statuses[0], all_tasks, view.note,
                          view.retrains.get(batches[0].id), as_json))
