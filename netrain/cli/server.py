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
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Server worker processes (each costs ~0.3 GB; two ship a batch 1.1x "
                   "(SQLite) to 1.6x (PostgreSQL) faster than one).")
@click.option("--auth", is_flag=True,
              help="Run MLflow's basic-auth app: clients need a name and password. Its admin "
                   "is you, from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the "
                   "environment; users are kept in basic_auth.db beside the tracking store.")
@click.option("--insecure", is_flag=True,
              help="Allow a --host other than loopback without --auth (anyone who reaches "
                   "it can read, change and delete every run).")
@click.pass_obj
def command(obj, backend_store_uri, host, port, workers, auth, insecure) -> None:
    """Start an MLflow tracking server for the trainings directory (artifacts proxied into
    TRAININGS_DIR/mlartifacts) and print the tracking_uri line for netrain.yaml."""
    from netrain.track import server, server_auth

    server_auth.check_exposure(host, auth, insecure)
    creds = server_auth.credentials_from_environment() if auth else None
    cfg = obj.config()
    trainings = Path(cfg.trainings_dir)
    if backend_store_uri is None:
        uri = cfg.tracking_uri
        backend_store_uri = (uri if uri.startswith("sqlite:///")
                             else "sqlite:///" + str(trainings / "mlflow.db"))
    server.check_backend_uri(backend_store_uri)
    setup = None if creds is None else \
        server_auth.AuthSetup(creds, server_auth.auth_db_path(backend_store_uri, trainings))
    try:
        rc = server.serve(backend_store_uri, trainings / "mlartifacts", host, port, workers,
                          say=lambda text: click.echo(text, err=text.startswith("netrain:")),
                          auth=setup)
    finally:
        if setup is not None:
            setup.close()
    sys.exit(rc)
