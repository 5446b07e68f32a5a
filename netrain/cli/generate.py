"""netrain generate: build a self-contained batch project (and, with --run, start it)."""

from __future__ import annotations

import click

from netrain.cli.common import say, warn

BOOL = click.Choice(["true", "false", "1", "0", "yes", "no"], case_sensitive=False)


def to_bool(value: str | bool | None) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1", "yes")


def training_options(f):
    """The options generate and add share (the seed's names, both spellings)."""
    for deco in reversed([
        click.option("--models", required=True, metavar="SPEC",
                     help='Models to train: "class.arch=N, arch=N, class2.arch=N" (N networks '
                          "per array task; a name without a class takes the previous class)."),
        click.option("--array", type=int, default=1, show_default=True,
                     help="Array tasks per model (each trains N networks)."),
        click.option("--nb-epoch", "--nb_epoch", "nb_epoch", type=int, default=10,
                     show_default=True, help="Keras epochs per network."),
        click.option("--epoch-samples", "--epoch_samples", "epoch_samples", type=int,
                     default=1000, show_default=True, help="Samples per epoch (not steps)."),
        click.option("--intelligent", type=BOOL, is_flag=False, flag_value="true",
                     default="false", metavar="[true|false]",
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
@click.option("--run", "run_", type=BOOL, is_flag=False, flag_value="true", default="false",
              metavar="[true|false]", help="Start the batch right away (see --executor).")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Where --run sends the batch (default: executor in netrain.yaml, else local).")
@click.option("--workers", type=int, default=None, help="Local executor: tasks at a time.")
@click.option("--max-running", type=int, default=None,
              help="SLURM: at most K tasks of each array at once (--array=0-N%K).")
@click.option("--dry-run", is_flag=True, help="Print what would be written and submitted.")
@click.pass_obj
def command(obj, models, array, nb_epoch, epoch_samples, intelligent, pack, no_check, gpu,
            desc, run_, executor, workers, max_running, dry_run) -> None:
    """Build a batch: code snapshot, one sbatch array script per model, runbatch.sh."""
    import dataclasses

    from netrain.builder import TrainOptions, generate
    from netrain.spec import parse_models

    specs = parse_models(models)
    if workers is not None and workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    cfg = obj.config()
    if max_running is not None:
        if max_running < 1:
            raise click.BadParameter("must be at least 1", param_hint="--max-running")
        cfg = dataclasses.replace(cfg, slurm=dataclasses.replace(cfg.slurm,
                                                                 max_running=max_running))
    opts = TrainOptions(array=array, nb_epoch=nb_epoch, epoch_samples=epoch_samples,
                        intelligent=to_bool(intelligent), pack=pack)
    path, manifest = generate(cfg, specs, opts, description=desc, gpu=gpu,
                              check=not no_check, dry_run=dry_run, say=warn)
    if dry_run:
        return
    warn(f"batch {manifest.id}: {len(specs)} model(s) x {array} task(s), "
         f"{manifest.networks} network(s); MLflow experiment {manifest.tracking['experiment_id']}")
    say(str(path))
    if to_bool(run_):
        from netrain.cli.run import start

        start(obj, path, executor or cfg.executor, None, None, workers, rerun=False)
