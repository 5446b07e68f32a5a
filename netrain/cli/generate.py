"""netrain generate: build a self-contained batch project (and, with --run, start it)."""

from __future__ import annotations

import click

from netrain.cli.common import EXECUTOR, POSITIVE, load_batch, say, start_tasks, warn


def bool_option(*names: str, help: str):
    """``--name`` alone means true; ``--name false`` too is accepted (the seed's ``--run True``):
    true/false, yes/no, 1/0, on/off in any case, the words
    netrain.define.params.parse_bool takes."""
    return click.option(*names, type=click.BOOL, is_flag=False, flag_value=True, default=False,
                        metavar="[true|false]", help=help)


def training_options(f):
    """The options generate and add share (the seed's names, both spellings)."""
    for deco in reversed([
        click.option("--models", required=True, metavar="SPEC",
                     help='Models to train: "class.arch=N, arch=N, class2.arch=N" (N networks '
                          "per array task; a name without a class takes the previous class)."),
        click.option("--array", type=POSITIVE, default=1, show_default=True,
                     help="Array tasks per model (each trains N networks)."),
        click.option("--nb-epoch", "--nb_epoch", "nb_epoch", type=POSITIVE, default=10,
                     show_default=True, help="Keras epochs per network."),
        click.option("--epoch-samples", "--epoch_samples", "epoch_samples", type=POSITIVE,
                     default=1000, show_default=True, help="Samples per epoch (not steps)."),
        bool_option("--intelligent",
                    help="Stop a network when its validation loss stops improving."),
        click.option("--pack", is_flag=True,
                     help="Train each task's networks together in one vectorized step "
                          "(same results, many times faster for small networks)."),
        click.option("--no-check", is_flag=True,
                     help="Do not call the configuration function before writing the batch."),
    ]):
        f = deco(f)
    return f


@click.command("generate")
@training_options
@click.option("--gpu", is_flag=True, help="Request a GPU per task and use the GPU environment.")
@click.option("--desc", default="", help="Description of the batch (the MLflow experiment's).")
@bool_option("--run", "run_", help="Start the batch right away (see --executor).")
@click.option("--executor", type=EXECUTOR, default=None,
              help="Where --run sends the batch (default: executor in netrain.yaml, else local).")
@click.option("--workers", "-j", type=POSITIVE, default=None,
              help="With --run on the local executor: tasks at a time (default: workers in "
              "netrain.yaml, else 2).")
@click.option("--max-running", type=POSITIVE, default=None,
              help="SLURM: at most K tasks of each array at once (--array=0-N%K).")
@click.option("--dry-run", is_flag=True, help="Print what would be written and submitted.")
@click.pass_obj
def command(obj, models, array, nb_epoch, epoch_samples, intelligent, pack, no_check, gpu,
            desc, run_, executor, workers, max_running, dry_run) -> None:
    """Build a batch: code snapshot, one sbatch array script per model, runbatch.sh."""
    import dataclasses

    from netrain.define.builder import TrainOptions, generate
    from netrain.define.spec import parse_models

    specs = parse_models(models)
    cfg = obj.config()
    if max_running is not None:
        cfg = dataclasses.replace(cfg, slurm=dataclasses.replace(cfg.slurm,
                                                                 max_running=max_running))
    opts = TrainOptions(array=array, nb_epoch=nb_epoch, epoch_samples=epoch_samples,
                        intelligent=intelligent, pack=pack)
    path, manifest = generate(cfg, specs, opts, description=desc, gpu=gpu,
                              check=not no_check, dry_run=dry_run, say=warn)
    if dry_run:
        return
    warn(f"batch {manifest.id}: {len(specs)} model(s) x {array} task(s), "
         f"{manifest.networks} network(s); MLflow experiment {manifest.tracking['experiment_id']}")
    say(str(path))
    if run_:
        start_tasks(obj, load_batch(obj, path), executor or cfg.executor, workers=workers)
