"""The MLflow client door of the CLI side: experiments per batch, runs, notes, closing dead
runs, reachability; callers get plain values and typed errors. One of the MLflow doors
(with mlflow_ship, the shipper's calls; mlflow_ui, the web UI; and results/mlflow_results,
the registry); imported lazily so `netrain --help` stays fast."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.errors import RunNotFound, TrackingError, TrackingUnavailable


def quiet_environment() -> None:
    """Settings every netrain process wants before mlflow is imported."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client(uri: str) -> Any:
    quiet_environment()
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _describe_uri(uri: str) -> str:
    # Never echo credentials: keep scheme, host and path only.
    from urllib.parse import urlsplit

    p = urlsplit(uri)
    host = p.hostname or ""
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{host}{port}{p.path}" if p.scheme != "sqlite" else uri


def check_reachable(uri: str) -> None:
    """Fail fast with a clear message when the tracking backend cannot be used."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise TrackingError(f"tracking database directory {db.parent} does not exist: "
                                "fix tracking_uri in netrain.yaml")
        if db.exists() and not os.access(db, os.R_OK | os.W_OK):
            raise TrackingError(f"tracking database {db} is not writable: fix its permissions")
        return
    if uri.startswith(("http://", "https://")):
        import urllib.request

        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status >= 400:
                    raise TrackingError(f"tracking server {_describe_uri(uri)} answered "
                                        f"{resp.status}: check tracking_uri")
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"tracking server {_describe_uri(uri)} is unreachable "
                                f"({reason}): start it or fix tracking_uri in netrain.yaml"
                                ) from None
        from netrain.track.server_auth import refusal

        refused = refusal(uri, _describe_uri(uri))
        if refused:
            raise TrackingError(refused)


def initialise_sqlite(uri: str) -> None:
    """Build a new SQLite database's tables in a temporary file, then rename it into place:
    an interrupted first use never leaves a half-built database behind."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///"):])
    if db.exists():
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{db.name}.", suffix=".init", dir=db.parent)
    os.close(fd)
    os.unlink(tmp)  # let SQLite create it
    try:
        c = client("sqlite:///" + tmp)
        c.search_experiments(max_results=1)  # creates the tables
        del c
        if not db.exists():
            os.replace(tmp, db)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def create_batch_experiment(uri: str, name: str, description: str,
                            artifact_location: str | None, tags: Mapping[str, str]) -> str:
    """Create the batch's experiment up front (one process, so no race creates it twice)."""
    check_reachable(uri)
    try:
        initialise_sqlite(uri)
        c = client(uri)
        if c.get_experiment_by_name(name) is not None:
            raise TrackingError(f"an MLflow experiment named {name} already exists in "
                                f"{_describe_uri(uri)}: pick another batch id")
        all_tags = {"mlflow.experimentKind": "custom_model_development", **tags}
        if description:
            all_tags["mlflow.note.content"] = description
        return str(c.create_experiment(name, artifact_location=artifact_location, tags=all_tags))
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"cannot create the batch's MLflow experiment in "
                            f"{_describe_uri(uri)}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def delete_experiment(uri: str, experiment_id: str) -> None:
    with contextlib.suppress(Exception):
        client(uri).delete_experiment(experiment_id)


@dataclass(frozen=True)
class RunInfo:
    """What netrain reads of an MLflow run."""

    uri: str
    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each
    name: str = ""
    start_time: int | None = None  # ms since the epoch
    end_time: int | None = None
    artifact_uri: str = ""


#: MLflow's error codes for "there is no such thing" (a REST 404 or a store lookup).
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND")


def error_code(exc: BaseException) -> str:
    """MLflow's code for an error (``RESOURCE_DOES_NOT_EXIST``, ...), or "" for others."""
    return str(getattr(exc, "error_code", "") or "")


def _run_info(uri: str, run: Any) -> RunInfo:
    return RunInfo(uri, run.info.run_id, str(run.info.experiment_id), str(run.info.status),
                   dict(run.data.tags), dict(run.data.params), dict(run.data.metrics),
                   str(run.info.run_name or ""), run.info.start_time, run.info.end_time,
                   str(run.info.artifact_uri or ""))


def get_run(uri: str, run_id: str) -> RunInfo:
    """The MLflow run with that id; RunNotFound if the backend does not have it,
    TrackingUnavailable if the backend cannot be asked."""
    try:
        check_reachable(uri)
    except TrackingError as exc:
        raise TrackingUnavailable(str(exc)) from None
    try:
        return _run_info(uri, client(uri).get_run(run_id))
    except Exception as exc:
        if error_code(exc) in _NOT_FOUND:
            raise RunNotFound(f"no MLflow run {run_id!r} in {_describe_uri(uri)}: "
                              "copy the run id from 'netrain show BATCH' or mlflow ui") from None
        raise TrackingUnavailable(f"cannot read run {run_id} from {_describe_uri(uri)}: "
                                  f"{type(exc).__name__}") from None


def find_run(uris: list[str], run_id: str) -> RunInfo:
    """Look a run id up in several tracking backends."""
    errors: list[TrackingError] = []
    for uri in dict.fromkeys(uris):
        try:
            return get_run(uri, run_id)
        except TrackingError as exc:
            errors.append(exc)
    # An unreachable backend matters more than "not found" in the others: it may hold the run.
    down = [e for e in errors if isinstance(e, TrackingUnavailable)]
    raise (down or errors or [RunNotFound(f"no MLflow run {run_id!r}")])[0]


def experiment_tag(uri: str, experiment_id: str, key: str) -> str | None:
    """One tag of an experiment, or None when it (or the experiment) is not there."""
    try:
        return client(uri).get_experiment(experiment_id).tags.get(key)
    except Exception as exc:
        if error_code(exc) in _NOT_FOUND:
            return None
        raise TrackingUnavailable(f"cannot read experiment {experiment_id} from "
                                  f"{_describe_uri(uri)}: {type(exc).__name__}") from None


def set_run_note(uri: str, run_id: str, text: str) -> None:
    client(uri).set_tag(run_id, "mlflow.note.content", text)


def set_experiment_note(uri: str, experiment_id: str, text: str) -> None:
    client(uri).set_experiment_tag(experiment_id, "mlflow.note.content", text)


def close_runs(uri: str, run_ids: list[str], status: str) -> int:
    """Mark the runs that are still RUNNING as ``status``; return how many were closed.

    A run the backend does not have counts as closed. Anything else (the backend is down,
    refuses, times out) raises TrackingUnavailable, and the caller keeps its own state.
    """
    try:
        c = client(uri)
    except Exception as exc:
        raise TrackingUnavailable(f"cannot open tracking backend {_describe_uri(uri)}: "
                                  f"{type(exc).__name__}") from None
    closed = 0
    for run_id in run_ids:
        try:
            if c.get_run(run_id).info.status == "RUNNING":
                c.set_terminated(run_id, status)
                closed += 1
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                continue
            raise TrackingUnavailable(f"cannot close run {run_id} in {_describe_uri(uri)}: "
                                      f"{type(exc).__name__}") from None
    return closed
