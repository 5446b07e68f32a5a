"""netrain server: an MLflow tracking server for the trainings directory."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("server")
@click.option("--backend-store-uri", default=None, metavar="URI",
              help="sqlite:///path/mlflow.db (default: the project's tracking database) or "
                   "postgresql+psycopg2://user@host/db (password from PGPASSWORD/~/.pgpass).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port to listen on (MLflow's own default; 'netrain ui' uses 5001).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server worker processes (one is enough for a lab; each costs ~0.3 GB).")
@click.pass_obj
def command(obj, backend_store_uri, host, port, workers) -> None:
    """Start an MLflow tracking server for the trainings directory (artifacts proxied into
    TRAININGS_DIR/mlartifacts) and print the tracking_uri line for netrain.yaml."""
    from netrain.track import server

    cfg = obj.config()
    trainings = Path(cfg.trainings_dir)
    if backend_store_uri is None:
        uri = cfg.tracking_uri
        backend_store_uri = (uri if uri.startswith("sqlite:///")
                             else "sqlite:///" + str(trainings / "mlflow.db"))
    rc = server.serve(backend_store_uri, trainings / "mlartifacts", host, port, workers,
                      say=lambda text: click.echo(text, err=text.startswith("netrain:")))
    sys.exit(rc)
