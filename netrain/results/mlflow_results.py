"""Results in MLflow: the report's run, a chosen network in the Model Registry, and the
runs `describe` reads. Imported lazily (it imports mlflow)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from netrain.define.batch import Batch
from netrain.errors import NetrainError, TrackingError
from netrain.results.networks import Network
from netrain.track.mlflow_store import client

#: Tag marking the run that holds a batch's report (not a task's, not a network's run):
#: `show` and run counts must leave out runs with ``tags.netrain.kind = 'report'``.
KIND_TAG = "netrain.kind"
REPORT_KIND = "report"


def _uri_and_experiment(batch: Batch) -> tuple[str, str]:
    t = batch.manifest.tracking
    return str(t["uri"]), str(t["experiment_id"])


def log_report(batch: Batch, out: Path) -> str:
    """Log the report's files as artifacts of the batch's ``report`` run (made once, then
    reused); returns the run id. Raises TrackingError when the backend cannot be used."""
    from netrain.track.mlflow_store import check_reachable

    uri, exp = _uri_and_experiment(batch)
    check_reachable(uri)
    try:
        c = client(uri)
        found = c.search_runs([exp], f"tags.`{KIND_TAG}` = '{REPORT_KIND}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run = c.create_run(exp, run_name="report",
                               tags={KIND_TAG: REPORT_KIND, "batch": batch.id})
            run_id = run.info.run_id
        c.log_artifacts(run_id, str(out))
        c.set_terminated(run_id, "FINISHED")
        return str(run_id)
    except Exception as exc:
        raise TrackingError(f"cannot log the report to MLflow ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def load_keras_model(net: Network) -> Any:
    """The network rebuilt from its saved architecture JSON and weights."""
    for what, path in (("architecture", net.arch), ("weights", net.weights)):
        if not path or not Path(path).is_file():
            raise NetrainError(f"the {what} file of network {net.model} task {net.task} net "
                               f"{net.net} is missing ({path or 'no file recorded'}): it cannot "
                               "be registered")
    import keras

    model = keras.models.model_from_json(Path(net.arch).read_text(encoding="utf-8"))
    model.load_weights(net.weights)
    return model


def pip_requirements() -> list[str]:
    """The packages a registered model needs, pinned to the versions here (so MLflow does
    not infer them by reloading the model in a subprocess)."""
    from importlib import metadata

    from netrain.define.provenance import backend_package

    out = []
    for dist in ("mlflow", "keras", backend_package(), "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{dist}=={metadata.version(dist)}")
    return out


def register(batch: Batch, net: Network, name: str) -> dict[str, str]:
    """Log the network as a Keras model on its own run and register it as ``name``; returns
    the model URI, registered name and version."""
    import os

    if not net.run_id:
        raise NetrainError(f"network {net.model} task {net.task} net {net.net} has no MLflow "
                           "run: it cannot be registered")
    model = load_keras_model(net)
    uri, _ = _uri_and_experiment(batch)
    from netrain.track.mlflow_store import check_reachable

    check_reachable(uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    c = client(uri)
    status = c.get_run(net.run_id).info.status
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with mlflow.start_run(run_id=net.run_id):
            info = mlflow.keras.log_model(model, name="model", registered_model_name=name,
                                          pip_requirements=pip_requirements(),
                                          await_registration_for=30)
    finally:
        with contextlib.suppress(Exception):
            c.set_terminated(net.run_id, status)  # resuming the run set it RUNNING
    version = str(getattr(info, "registered_model_version", "") or "")
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}",
            "logged_model_uri": str(info.model_uri), "run_id": net.run_id}


def get_run(uri: str, run_id: str) -> Any:
    from netrain.track.mlflow_store import get_run as _get

    return _get(uri, run_id)


def retrains_of(uri: str, experiment_id: str, run_id: str) -> list[Any]:
    """The network runs that retrain ``run_id``."""
    with contextlib.suppress(Exception):
        runs = client(uri).search_runs([experiment_id], f"tags.retrain_of = '{run_id}'")
        return [r for r in runs if "net_index" in r.data.tags]
    return []
