"""netrain describe: everything about one network (or task) run."""

from __future__ import annotations

import click

from netrain.cli.common import say


@click.command("describe")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def command(obj, run_id, as_json) -> None:
    """How the network of MLflow run RUN_ID was made: batch, model, task and net, seed,
    params, code digest and commit, versions, host, job, status, epochs, final metrics,
    files and retrain lineage."""
    from netrain.results import describe
    from netrain.results.lookup import find_run

    cfg = obj.config(required=False)
    ref = find_run(run_id, obj.trainings_dir(), cfg.tracking_uri if cfg.path else None)
    d = describe.gather(ref)
    say(describe.as_json(d) if as_json else describe.as_text(d))
