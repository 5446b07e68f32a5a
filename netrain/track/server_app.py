"""The app `netrain server` runs: MLflow's own tracking server (with its basic-auth app when
asked), plus one route that takes a finished run whole: created with its tags, its metrics
and params logged, its files stored, its status set, in one request instead of six.

The route creates each run and stores its files through the server's own tracking store and
artifact repository, as MLflow's handlers do; the run's params, metric points, latest values
and end go in one transaction on the store's own tables (the rows log_batch and
update_run_info write for a fresh run; tests/integration/test_whole_run.py compares them with
a plain server's). A client that talks to a plain `mlflow server` gets 404 here and ships
call by call. Registered as the MLflow apps "netrain"
and "netrain-auth" (entry points of the group ``mlflow.app``, see pyproject.toml)."""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import time
from typing import Any

#: the route (POST, multipart: a "runs" field, a JSON list of runs; then the files, each
#: field named "<index of its run>:<artifact folder>")
WHOLE_RUN = "/netrain-api/1/whole-run"


def _safe_folder(sub: str) -> str:
    folder = posixpath.normpath(sub.replace("\\", "/")) if sub else ""
    if folder in (".", ""):
        return ""
    if folder.startswith(("/", "..")) or "/../" in f"/{folder}/":
        raise ValueError(f"artifact folder {sub!r} leaves the run's artifacts")
    return folder


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"artifact file name {name!r} is not a plain file name")
    return name


def _artifact_repo(artifact_uri: str) -> tuple[Any, str]:
    """(repository, path in it) where a run's files go: the proxied destination for an
    mlflow-artifacts: URI, else the run's own artifact location."""
    from urllib.parse import urlsplit

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if artifact_uri.startswith("mlflow-artifacts:"):
        from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

        return _get_artifact_repo_mlflow_artifacts(), urlsplit(artifact_uri).path.lstrip("/")
    return get_artifact_repository(artifact_uri), ""


def _store_file(repo: Any, folder: str | None, name: str, storage: Any) -> None:
    if hasattr(repo, "log_artifact_from_stream"):  # written in place, as MLflow's uploads
        repo.log_artifact_from_stream(storage.stream, name, artifact_path=folder)
        return
    with tempfile.TemporaryDirectory(prefix="netrain-whole-run-") as tmp:
        local = os.path.join(tmp, name)
        storage.save(local)
        repo.log_artifact(local, folder)


def _one_run(store: Any, experiment_id: str, spec: dict[str, Any],
             files: list[tuple[str, str, Any]]) -> str:
    """Create the run with its tags, log its metrics and params, store its files, end it."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    status = RunStatus.from_string(str(spec.get("status") or "FINISHED"))
    start = spec.get("start_time")
    run = store.create_run(experiment_id=experiment_id, user_id=str(spec.get("user") or ""),
                           start_time=int(start) if start is not None
                           else int(time.time() * 1000),
                           tags=[RunTag(k, str(v)) for k, v in (spec.get("tags") or {}).items()],
                           run_name=spec.get("name") or None)
    run_id = run.info.run_id
    metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in spec.get("metrics") or []]
    params = [Param(k, str(v)) for k, v in (spec.get("params") or {}).items()]
    end = spec.get("end_time")
    end_time = int(end) if end is not None else None
    if files:
        repo, root = _artifact_repo(run.info.artifact_uri)
        for folder, name, storage in files:
            path = posixpath.join(root, folder) if root and folder else (root or folder)
            _store_file(repo, path or None, name, storage)
    if _finish_fresh_run(store, run_id, metrics, params, status, end_time):
        return str(run_id)
    while metrics or params:
        # MLflow's limits for one log_batch: 1,000 metrics, 100 params, 1,000 in all
        p, params = params[:100], params[100:]
        m, metrics = metrics[:1000 - len(p)], metrics[1000 - len(p):]
        store.log_batch(run_id, metrics=m, params=p, tags=[])
    store.update_run_info(run_id, status, end_time, None)
    return str(run_id)


def _finish_fresh_run(store: Any, run_id: str, metrics: list[Any], params: list[Any],
                      status: int, end_time: int | None) -> bool:
    """A run this request created, finished in one transaction: its params, metric points
    and latest metric values inserted and its status and end time set, the rows
    SqlAlchemyStore's log_batch and update_run_info write for a run that holds none yet,
    validated as log_batch validates them (an invalid one raises before anything is
    written). Those two calls load and flush the run's objects several times: on a real
    packed study this took the server's CPU for 1,000 networks from 24.2 s to 14.1 s.
    False when the store is not MLflow's SQLAlchemy one."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if not isinstance(store, SqlAlchemyStore):
        return False
    import sqlalchemy as sa
    from mlflow.entities import RunStatus
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun
    from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

    metrics, params, _ = _validate_batch_log_data(metrics, params, [])
    _validate_param_keys_unique(params)
    points: dict[tuple[Any, ...], dict[str, Any]] = {}
    latest: dict[str, dict[str, Any]] = {}
    for m in metrics:
        is_nan, value = store.sanitize_metric_value(m.value)
        row = {"run_uuid": run_id, "key": m.key, "value": value, "timestamp": m.timestamp,
               "step": m.step, "is_nan": is_nan}
        ident = (m.key, m.timestamp, m.step, value, is_nan)  # the table's key: once each
        if ident in points:
            continue
        points[ident] = row
        best = latest.get(m.key)
        # MLflow's rule: the latest is the greatest (step, timestamp, value), the first on ties
        if best is None or (m.step, m.timestamp, value) > (best["step"], best["timestamp"],
                                                           best["value"]):
            latest[m.key] = row
    ended: dict[str, Any] = {"status": RunStatus.to_string(status)}
    if end_time is not None:
        ended["end_time"] = end_time
    runs = SqlRun.__table__
    with store.ManagedSessionMaker(read_only=False) as session:
        if params:
            session.execute(sa.insert(SqlParam.__table__),
                            [{"run_uuid": run_id, "key": p.key, "value": p.value}
                             for p in params])
        if points:
            session.execute(sa.insert(SqlMetric.__table__), list(points.values()))
            session.execute(sa.insert(SqlLatestMetric.__table__), list(latest.values()))
        session.execute(sa.update(runs).where(runs.c.run_uuid == run_id).values(**ended))
    return True


def whole_run() -> Any:
    """POST WHOLE_RUN: each run of the request created, its batch logged, its files stored,
    ended, in order. The answer: the ids of the runs done, and, if one failed, its index and
    error (it may exist in part; the runs after it were not tried)."""
    from flask import jsonify, request
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.server.handlers import _get_tracking_store

    try:
        specs = json.loads(request.form["runs"])
        experiment_id = str(request.args["experiment_id"])
        files: dict[int, list[tuple[str, str, Any]]] = {}
        for field, storage in request.files.items(multi=True):
            index, _, folder = field.partition(":")
            files.setdefault(int(index), []).append(
                (_safe_folder(folder), _safe_name(os.path.basename(storage.filename or "")),
                 storage))
        if not isinstance(specs, list) or any(not isinstance(x, dict) for x in specs):
            raise ValueError("'runs' is not a list of runs")
    except (KeyError, ValueError, TypeError) as exc:
        raise MlflowException(f"netrain whole-run request: {exc}",
                              INVALID_PARAMETER_VALUE) from None
    store = _get_tracking_store()
    done: list[str] = []
    for i, spec in enumerate(specs):
        try:
            done.append(_one_run(store, experiment_id, spec, files.get(i, [])))
        except Exception as exc:
            code = exc.error_code if isinstance(exc, MlflowException) else "INTERNAL_ERROR"
            return jsonify({"run_ids": done, "error": {"index": i, "error_code": code,
                                                       "message": str(exc)[:2000]}})
    return jsonify({"run_ids": done})


def _add_route(app: Any) -> None:
    from mlflow.server.handlers import catch_mlflow_exception

    if WHOLE_RUN not in {r.rule for r in app.url_map.iter_rules()}:
        app.add_url_rule(WHOLE_RUN, "netrain_whole_run",
                         catch_mlflow_exception(whole_run), methods=["POST"])


def _served(app: Any) -> Any:
    """What the server process serves: under uvicorn (MLflow's default) the FastAPI app
    around the Flask one, as `mlflow server` builds it."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app


def create_app() -> Any:
    """The "netrain" app: MLflow's server and the whole-run route."""
    from mlflow.server import app

    _add_route(app)
    return _served(app)


def _can_create_run() -> bool:
    """basic auth: the sender may create runs in the experiment the query names (MLflow's
    own check for CreateRun, which reads the experiment id from the request)."""
    from flask import request
    from mlflow.server import auth

    try:
        return bool(auth._authorize_create_in_experiment(
            str(request.args["experiment_id"]), auth.RESOURCE_TYPE_RUN))
    except Exception:
        return False  # unknown experiment, or a MLflow whose check moved: refuse


def create_auth_app() -> Any:
    """The "netrain-auth" app: MLflow's basic-auth app and the whole-run route, which
    needs a login and the right to create runs in the run's experiment."""
    from mlflow.server import app, auth

    _add_route(app)
    auth.BEFORE_REQUEST_VALIDATORS[(WHOLE_RUN, "POST")] = _can_create_run
    return auth.create_app(app)
