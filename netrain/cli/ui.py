"""netrain ui: MLflow's web UI on the project's tracking store, lean and local."""

from __future__ import annotations

import signal
import sys

import click

from netrain.cli.common import load_batch, say, warn
from netrain.errors import NetrainError


@click.command("ui")
@click.argument("batch", required=False)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--print-only", is_flag=True, help="Print the mlflow command instead of "
              "starting it.")
@click.pass_obj
def command(obj, batch, port, print_only) -> None:
    """Start mlflow ui on this project's tracking store, bound to 127.0.0.1 (one worker, no
    job runner), and print its URL (BATCH: the URL of that batch's experiment). Ctrl-C stops
    it."""
    from netrain import mlflow_ui

    cfg = obj.config()
    experiment = None
    if batch is not None:
        b = load_batch(obj, batch)
        experiment = str(b.manifest.tracking["experiment_id"])
    uri = cfg.tracking_uri
    if mlflow_ui.is_server(uri):
        say(mlflow_ui.url(uri.rstrip("/"), experiment))
        warn("tracking_uri is a tracking server: open it in a browser (nothing started)")
        return
    argv, env = mlflow_ui.command(uri, cfg.trainings_dir, port)
    if print_only:
        say(" ".join(argv))
        return
    mlflow_ui.check_port(port)
    proc = mlflow_ui.start(argv, env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop mlflow ui with us
    try:
        base = f"http://127.0.0.1:{port}"
        mlflow_ui.wait_healthy(proc, base)
        say(mlflow_ui.url(base, experiment))
        warn("mlflow ui is running; Ctrl-C stops it")
        rc = proc.wait()
        if rc != 0:  # not stopped by us: it died (killed, out of memory)
            raise NetrainError(f"mlflow ui ended with {_status(rc)}: see its messages above")
    finally:
        mlflow_ui.stop(proc)


def _status(rc: int) -> str:
    return f"signal {-rc}" if rc < 0 else f"status {rc}"
