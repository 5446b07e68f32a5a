"""netrain ui: MLflow's web UI on the project's tracking store, lean and local."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from netrain.cli.common import load_batch, say, warn
from netrain.errors import NetrainError


@click.command("ui")
@click.argument("batch", required=False)
@click.option("--port", type=click.IntRange(1, 65535), default=5001, show_default=True,
              help="Port on 127.0.0.1 (5001, so that it runs beside 'netrain server' on "
              "5000).")
@click.option("--print-only", is_flag=True, help="Print the mlflow command instead of "
              "starting it.")
@click.pass_obj
def command(obj, batch, port, print_only) -> None:
    """Start mlflow ui on this project's tracking store, bound to 127.0.0.1 (one worker, no
    job runner), and print its URL. BATCH: the URL of the batch's tasks, one row each
    whatever its size (networks finished, best and median loss), then of its 20 best
    networks. Ctrl-C stops it."""
    from netrain.track import mlflow_ui

    cfg = obj.config()
    experiment = None
    if batch is not None:
        b = load_batch(obj, batch)
        experiment = str(b.manifest.tracking["experiment_id"])
    uri = cfg.tracking_uri
    argv, env = mlflow_ui.command(uri, cfg.trainings_dir, port)
    if print_only and not mlflow_ui.is_server(uri):
        say(" ".join(argv))
        return
    if not mlflow_ui.is_server(uri):
        mlflow_ui.check_port(port)
    views = _views(uri, experiment) if experiment else None
    if mlflow_ui.is_server(uri):
        _urls(uri.rstrip("/"), experiment, views)
        warn("tracking_uri is a tracking server: open it in a browser (nothing started)")
        return
    proc = mlflow_ui.start(argv, env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop mlflow ui with us
    try:
        base = f"http://127.0.0.1:{port}"
        mlflow_ui.wait_healthy(proc, base)
        _urls(base, experiment, views)
        warn("mlflow ui is running; Ctrl-C stops it")
        rc = proc.wait()
        if rc != 0:  # not stopped by us: it died (killed, out of memory)
            raise NetrainError(f"mlflow ui ended with {_status(rc)}: see its messages above")
    finally:
        mlflow_ui.stop(proc)


def _views(uri: str, experiment: str) -> tuple[str, Any] | None:
    """The batch's views written to its experiment, or None (said why) when they cannot be."""
    from netrain.track import mlflow_ui

    try:
        return mlflow_ui.write_views(uri, experiment)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warn(f"cannot write the batch's views to MLflow ({msg}): the URL below opens its "
             "runs as mlflow ui lists them, 100 at a time")
        return None


def _urls(base: str, experiment: str | None, views: tuple[str, Any] | None) -> None:
    """stdout: the URL to open (the batch's tasks when it has views), then the best
    networks' URL; stderr: what each one shows."""
    from netrain.track import mlflow_ui

    if experiment is None or views is None:
        say(mlflow_ui.url(base, experiment))
        return
    tasks, best = views
    say(mlflow_ui.view_url(base, experiment, tasks))
    if isinstance(best, mlflow_ui.BestView):
        say(mlflow_ui.view_url(base, experiment, best.key))
        warn(f"first URL: the batch's tasks, one row each (networks finished, best and median "
             f"{best.metric}; a task's page lists its networks); second: its {best.count} "
             f"best networks by {best.metric}")
    else:
        warn("the URL shows the batch's tasks, one row each (a task's page lists its "
             "networks); no network has finished yet, so no best networks' URL")


def _status(rc: int) -> str:
    return f"signal {-rc}" if rc < 0 else f"status {rc}"
