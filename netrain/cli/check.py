"""netrain check: run netrain's probe where the tasks will run and print what would break a
large array there (one table; exit 1 if a line fails)."""

from __future__ import annotations

import click

from netrain.cli.common import EXECUTOR, POSITIVE, say, warn


@click.command("check")
@click.option("--executor", type=EXECUTOR, default=None,
              help="Where the tasks will run (default: executor in netrain.yaml, else local).")
@click.option("--gpu", is_flag=True, help="Check the GPU environment and GPU request, as "
              "generate --gpu uses them, and that the backend sees a GPU.")
@click.option("--models", default=None, metavar="SPEC",
              help="Also call the configuration function for these models on the node "
                   "(build each model, read one batch of data), as generate's check does.")
@click.option("--array", type=POSITIVE, default=1, show_default=True,
              help="The largest array you will submit (checked against MaxArraySize).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              metavar="SECONDS", help="Give up (and cancel the job) after this long.")
@click.pass_obj
def command(obj, executor, gpu, models, array, timeout) -> None:
    """Check the tasks' environment: Python, netrain, Keras, GPU, trainings directory,
    tracking, and (SLURM) what the cluster accepts, from one short job."""
    from netrain.define.spec import parse_models
    from netrain.execute.check import check

    specs = parse_models(models) if models else []
    cfg = obj.config()
    outcome = check(cfg, executor or cfg.executor, gpu=gpu, models=specs, array=array,
                    timeout=timeout, say=warn)
    say(outcome.text)
    if not outcome.ok:
        raise click.exceptions.Exit(1)
