"""netrain add: add models, or more array tasks of a model, to an existing batch."""

from __future__ import annotations

import click

from netrain.cli.common import EXECUTOR, POSITIVE, TaskProgress, load_batch, say, warn
from netrain.cli.generate import bool_option, training_options


@click.command("add")
@click.argument("batch")
@training_options
@bool_option("--run", "run_", help="Start the new tasks right away (see --executor).")
@click.option("--executor", type=EXECUTOR, default=None,
              help="Where --run sends the new tasks (default: executor in netrain.yaml, else "
              "local).")
@click.option("--workers", "-j", type=POSITIVE, default=None,
              help="With --run on the local executor: tasks at a time (default: workers in "
              "netrain.yaml, else 2).")
@click.pass_obj
def command(obj, batch, models, array, nb_epoch, epoch_samples, intelligent, pack, no_check,
            run_, executor, workers) -> None:
    """Add networks to BATCH: new models get scripts; existing models get new array tasks."""
    from netrain.define.builder import TrainOptions, add
    from netrain.define.spec import parse_models
    from netrain.execute import executor as ex
    from netrain.execute.local import python_executable

    specs = parse_models(models)
    b = load_batch(obj, batch)
    python = b.manifest.environment["value"] if b.manifest.environment["kind"] == "python" \
        else python_executable()
    opts = TrainOptions(array=array, nb_epoch=nb_epoch, epoch_samples=epoch_samples,
                        intelligent=intelligent, pack=pack)
    added = add(b, python, specs, opts, check=not no_check, say=warn)
    for model, seg in added:
        warn(f"{model.key}: tasks {seg.start}-{seg.stop - 1} added ({seg.nnets} network(s) each)")
    say(str(b.path))
    if run_:
        cfg = obj.config(required=False)
        selection = ex.Selection({model.key: list(range(seg.start, seg.stop))
                                  for model, seg in added}, skip_finished=False)
        started = ex.start(b, executor or cfg.executor, selection,
                           workers=workers or cfg.workers,
                           say=warn, progress=TaskProgress())
        if started.failures or started.interrupted:
            raise click.exceptions.Exit(1)
