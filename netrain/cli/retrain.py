"""netrain retrain: train one network again from the batch's (possibly edited) snapshot."""

from __future__ import annotations

from pathlib import Path

import click

from netrain.cli.common import EXECUTOR, POSITIVE, say, warn
from netrain.errors import NetrainError


@click.command("retrain")
@click.argument("run_id")
@click.option("--nb-epoch", "--nb_epoch", "nb_epoch", type=POSITIVE, default=None,
              help="Epochs this time (default: as the first time).")
@click.option("--from-weights", is_flag=True,
              help="Start from the network's trained weights instead of a fresh init.")
@click.option("--executor", type=EXECUTOR, default=None,
              help="Where the retrain runs (default: where the network's task ran).")
@click.option("--run/--no-run", "run_", default=True, show_default=True,
              help="Start it now (--no-run only writes scripts/retrain-*.sh).")
@click.pass_obj
def command(obj, run_id, nb_epoch, from_weights, executor, run_) -> None:
    """Train the network of MLflow run RUN_ID again: a new run tagged retrain_of=RUN_ID."""
    from netrain.define import builder
    from netrain.define.batch import network_files
    from netrain.execute import executor as ex
    from netrain.execute.records import read_model_records
    from netrain.results.lookup import find_run

    cfg = obj.config(required=False)
    ref = find_run(run_id, obj.trainings_dir(), cfg.tracking_uri if cfg.path else None)
    tags = ref.tags
    if "net_index" not in tags:
        raise NetrainError(f"run {run_id} is a task's run, not a network's: pass the run id of "
                           "one network (a child run)")
    batch = ref.batch
    model = batch.manifest.model(f"{tags['class']}.{tags['architecture']}")
    index, net = int(tags["array_index"]), int(tags["net_index"])
    weights: Path | None = None
    if from_weights:
        rec = read_model_records(batch.path, model.slug).get(index)
        net_rec = rec.nets.get(str(net)) if rec else None
        wdir = Path(ref.run.params.get("wpath", str(batch.path / "weights")))
        if tags.get("retrain_of") or net_rec is None or not net_rec.stem:
            raise NetrainError(f"cannot find the weights of run {run_id} in the batch's "
                               "records: retrain without --from-weights")
        weights = wdir / network_files(net_rec.stem)[0]
        if not weights.is_file():
            raise NetrainError(f"weights file {weights} is missing: retrain without "
                               "--from-weights")
    script = builder.retrain_script(batch, model, index, net, run_id, nb_epoch, weights)
    warn(f"retrain of {run_id}: {model.key} task {index} network {net} -> {script}")
    if not run_:
        say(str(script))
        return
    started = ex.start(batch, executor or cfg.executor,
                       ex.Selection.retraining(ex.Retrain(script, model.key, index, run_id)),
                       say=warn)
    if started.failures:
        raise NetrainError(f"the retrain failed: see {started.logs[0]}")
    if started.logs:
        warn(f"retrain finished; log: {started.logs[0]}")
        say(str(script))
