"""netrain report: learning curves, final-metric spread and best networks of a batch."""

from __future__ import annotations

from pathlib import Path

import click

from netrain.cli.common import POSITIVE, load_batch, say, warn


@click.command("report")
@click.argument("batch")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Folder for the PNG files, best.csv and report.html (default: the batch's "
              "report/ folder).")
@click.option("--metric", default=None, help="Final metric that ranks the networks "
              "(default: val_loss, else loss).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None,
              help="Whether lower or higher is better (default: max for accuracy-like "
              "metrics, else min).")
@click.option("--top", type=POSITIVE, default=5, show_default=True,
              help="Best networks listed per model.")
@click.option("--no-mlflow", is_flag=True, help="Do not log the report to the batch's "
              "MLflow experiment.")
@click.pass_obj
def command(obj, batch, out, metric, mode, top, no_mlflow) -> None:
    """Write BATCH's report (PNG figures, best.csv, one self-contained report.html) and log
    it to the batch's MLflow experiment as the run named 'report'."""
    from netrain.errors import NetrainError
    from netrain.results import report as batch_report

    b = load_batch(obj, batch)
    where = Path(out) if out else batch_report.default_out(b)
    if where.exists() and not where.is_dir():
        raise NetrainError(f"--out {where} is a file: pass a folder")
    rep = batch_report.build(b, where, metric=metric, mode=mode, top=top)
    if rep.networks == 0:
        warn(f"batch {b.id} has no trained network yet: the report is empty")
    if not no_mlflow:
        from netrain.errors import TrackingError

        try:
            from netrain.results import mlflow_results

            run_id = mlflow_results.log_report(b, where)
            warn(f"logged to MLflow: run {run_id} (named 'report') of experiment "
                 f"{b.manifest.tracking['experiment_id']}")
        except TrackingError as exc:
            warn(f"warning: the report is written but not logged to MLflow: {exc}")
    warn(f"{rep.networks} networks, {len(rep.figures)} figures, best by {rep.metric} "
         f"({rep.mode})")
    say(str(rep.html))
