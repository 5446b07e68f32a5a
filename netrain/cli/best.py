"""netrain best: the best networks of a batch by a final metric; optionally register one."""

from __future__ import annotations

import json

import click

from netrain.cli.common import POSITIVE, load_batch, say, warn


@click.command("best")
@click.argument("batch")
@click.option("--metric", default=None,
              help="Final metric (last epoch) that ranks the networks (default: val_loss, "
              "else loss, as report).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None,
              help="Whether lower or higher is better (default: max for accuracy-like "
              "metrics, else min).")
@click.option("--top", type=POSITIVE, default=5, show_default=True,
              help="Networks listed per model (or in all, with --across-models).")
@click.option("--across-models", is_flag=True,
              help="Rank all models' networks in one list (only meaningful when their "
              "metric is comparable, e.g. one loss for all).")
@click.option("--model", "model", default=None, help="Only this model (class.architecture).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--register", "register", default=None, metavar="NAME",
              help="Put the best network into MLflow's Model Registry as NAME (a Keras "
              "model logged on the network's own run).")
@click.pass_obj
def command(obj, batch, metric, mode, top, model, as_json, register, across_models) -> None:
    """List BATCH's best networks: run id, model, task, net, metric and weights path. Each
    model is ranked on its own (an autoencoder's MSE is no rival to a classifier's
    cross-entropy); --register takes the first listed."""
    from netrain.errors import NetrainError
    from netrain.results import networks as results

    b = load_batch(obj, batch)
    nets = results.networks(b)
    if model is not None:
        b.manifest.model(model)  # unknown model: one clear error
        nets = [n for n in nets if n.model == model]
    metric = metric or results.default_metric(results.metric_names(nets))
    mode = mode or results.default_mode(metric)
    top_nets = results.best(nets, metric, mode, top, models=not across_models)
    if not across_models:  # grouped by model, each model's own ranking kept
        top_nets.sort(key=lambda n: n.model)
    if not top_nets:
        raise NetrainError(f"batch {b.id} has no finished network yet: wait for it, or see "
                           f"'netrain show {b.id}'")
    registered = None
    if register is not None:
        from netrain.results import mlflow_results

        if not register.strip():
            raise NetrainError("--register needs a model name")
        if len({n.model for n in top_nets}) > 1 and not across_models:
            raise NetrainError("--register takes one network, and each model is ranked on "
                               "its own: add --model CLASS.ARCH (or --across-models)")
        registered = mlflow_results.register(b, top_nets[0], register)
        warn(f"registered {registered['model_uri']} (run {registered['run_id']}); load it "
             f"with mlflow.pyfunc.load_model('{registered['model_uri']}')")
    if as_json:
        out = {"batch": b.id, "metric": metric, "mode": mode,
               "best": [{**n.to_dict(), "value": n.final.get(metric)} for n in top_nets]}
        if registered:
            out["registered"] = registered
        say(json.dumps(out, indent=1))
        return
    from netrain.results.show import text_table

    rank: dict[str, int] = {}
    rows = []
    for n in top_nets:
        key = "" if across_models else n.model
        rank[key] = rank.get(key, 0) + 1
        rows.append([str(rank[key]), n.model, str(n.task), str(n.net), f"{n.final[metric]:.6g}",
                     str(n.epochs), n.run_id or "-", n.weights])
    say(text_table(rows, ["#", "MODEL", "TASK", "NET", metric.upper(), "EPOCHS", "RUN",
                      "WEIGHTS"]))
