"""Every MLflow call the shipper makes: find/create/reopen runs by key, batches, artifacts,
status, metric history, and which errors are transient."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netrain import env as names
from netrain.track.mlflow_store import error_code

KEY_TAG = "netrain.key"
PARENT_TAG = "mlflow.parentRunId"
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ITEMS = 1000

_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED",
                    "ABORTED", "SERVICE_UNDER_MAINTENANCE"}
_TRANSIENT_TEXT = re.compile(
    r"database is locked|connection refused|connection reset|connection aborted|"
    r"max retries exceeded|timed out|timeout|failed with error code (?:408|429|5\d\d)|"
    r"temporarily unavailable|remote end closed|broken pipe|name or service not known|"
    r"could not connect to server|server closed the connection|too many connections|"
    r"deadlock detected|connection to server",
    re.IGNORECASE)


def client(uri: str) -> Any:
    """An MlflowClient that does not retry HTTP calls itself: the shipper retries, and an
    MLflow-level retry of a POST that did arrive could create a second run."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    # Long enough for a busy server (a request the client gives up on may still be carried
    # out: see "uncertain" in shipper.py), short enough to keep the drain bound.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = os.environ.get(names.SHIP_HTTP_TIMEOUT, "60")
    # set_terminated would print (and fetch the run for) a "View run" link per run
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    # Journals are shipped by several threads at once, each uploading files in parallel:
    # room for all of their connections in the one pool MLflow keeps per host
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", "64")
    import logging

    from netrain.track.mlflow_store import client as make_client

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    c = make_client(uri)
    # "database is locked" is logged there with a traceback, then raised: we retry it.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    return c



def is_transient(exc: BaseException) -> bool:
    """Connection refused, timeouts, HTTP 408/429/5xx, SQLite "database is locked",
    MLflow TEMPORARILY_UNAVAILABLE: worth retrying. Everything else is permanent."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if error_code(exc) in _TRANSIENT_CODES:
        return True
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return bool(_TRANSIENT_TEXT.search(str(exc)))


_DB_LAYER = re.compile(r"sqlalche\.me|sqlalchemy|sqlite3\.|psycopg2?\.|QueuePool",
                       re.IGNORECASE)


_NOT_SENT = re.compile(r"connection refused|failed to establish a new connection|"
                       r"name or service not known|temporary failure in name resolution|"
                       r"no route to host", re.IGNORECASE)


def never_arrived(exc: BaseException) -> bool:
    """True when the request cannot have reached the server (nobody listening)."""
    return isinstance(exc, ConnectionRefusedError) or bool(_NOT_SENT.search(str(exc)))


def is_internal(exc: BaseException) -> bool:
    """A server's INTERNAL_ERROR, or a database-layer error that MLflow passed on as
    BAD_REQUEST (HTTP 400) under load: retried several times, then taken as permanent."""
    return error_code(exc) == "INTERNAL_ERROR" or bool(_DB_LAYER.search(str(exc)))


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    code = error_code(exc)
    return f"{type(exc).__name__}{f' {code}' if code else ''}: {text}"


def find_runs_by_key(c: Any, experiment_id: str, key_value: str) -> list[str]:
    """Ids of the live runs of an experiment tagged netrain.key=key_value, oldest first."""
    quoted = key_value.replace("\\", "\\\\").replace("'", "\\'")
    runs = c.search_runs([str(experiment_id)], filter_string=f"tags.`{KEY_TAG}` = '{quoted}'",
                         max_results=50, order_by=["attributes.start_time ASC"])
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time or 0,
                                                              r.info.run_id))]


def run_exists(c: Any, run_id: str) -> bool:
    try:
        run = c.get_run(run_id)
    except Exception as exc:
        if is_transient(exc) or is_internal(exc):
            raise
        return False
    return bool(run.info.lifecycle_stage == "active")


def delete_duplicates(c: Any, experiment_id: str, key_value: str, keep: str,
                      with_data: bool = False) -> int:
    """Delete (soft: lifecycle "deleted") the other live runs tagged with this key that hold
    no metrics: a create that the server finished after the client had given up on it.
    ``with_data``: the lost request was a whole run's, whose second run holds the same
    metrics and files as the one kept: deleted too."""
    deleted = 0
    for run_id in find_runs_by_key(c, experiment_id, key_value):
        if run_id != keep and (with_data or not c.get_run(run_id).data.metrics):
            c.delete_run(run_id)
            deleted += 1
    return deleted


#: run id -> artifact URI, from the answer of create_run: an upload then needs no get_run
_ARTIFACT_URIS: dict[str, str] = {}


def create_run(c: Any, experiment_id: str, name: str, tags: Mapping[str, str],
               start_time: int | None) -> str:
    run = c.create_run(str(experiment_id), start_time=start_time, tags=dict(tags),
                       run_name=name or None)
    run_id = str(run.info.run_id)
    if run.info.artifact_uri:
        _ARTIFACT_URIS[run_id] = str(run.info.artifact_uri)
    return run_id


def reopen_run(c: Any, run_id: str, tags: Mapping[str, str]) -> None:
    """Status RUNNING again, tags updated (a resumed task, or a replayed run event)."""
    c.update_run(run_id, status="RUNNING")
    log_batch(c, run_id, metrics=[], params={}, tags=tags)


def log_batch(c: Any, run_id: str, metrics: Sequence[tuple[str, float, int, int]],
              params: Mapping[str, str], tags: Mapping[str, str]) -> int:
    """Send metrics (name, value, timestamp ms, step), params and tags in as few log_batch
    calls as MLflow's limits allow; return the number of calls."""
    from mlflow.entities import Metric, Param, RunTag

    m = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
    p = [Param(k, v) for k, v in params.items()]
    t = [RunTag(k, v) for k, v in tags.items()]
    calls = 0
    while m or p or t:
        cp, p = p[:MAX_PARAMS], p[MAX_PARAMS:]
        ct, t = t[:MAX_TAGS], t[MAX_TAGS:]
        room = MAX_ITEMS - len(cp) - len(ct)
        cm, m = m[:min(room, MAX_METRICS)], m[min(room, MAX_METRICS):]
        c.log_batch(run_id, metrics=cm, params=cp, tags=ct)
        calls += 1
    return calls


def logged_steps(c: Any, run_id: str, names: Iterable[str]) -> set[tuple[str, int]]:
    """The (metric, step) pairs a run already holds, for the given metric names."""
    have: set[tuple[str, int]] = set()
    for name in names:
        for m in c.get_metric_history(run_id, name):
            have.add((name, int(m.step)))
    return have


def log_artifacts(c: Any, run_id: str, files: Sequence[tuple[str, Path]]) -> int:
    """Upload the files (artifact folder, path) of a run, in parallel; return how many.

    A file sent twice (a retry after a lost answer) is written again in place: uploads are
    idempotent, so the retry of a partly done call is safe."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if not files:
        return 0
    uri = _ARTIFACT_URIS.get(run_id)
    if uri is None:
        uri = str(c.get_run(run_id).info.artifact_uri)
        _ARTIFACT_URIS[run_id] = uri
    repo = get_artifact_repository(uri, tracking_uri=c.tracking_uri)
    if len(files) == 1:
        sub, path = files[0]
        repo.log_artifact(str(path), sub or None)
        return 1
    from concurrent.futures import ThreadPoolExecutor

    # a pool per call: its threads end with it (a process-wide pool would keep threads
    # that netrain's exit, which joins them, waits on forever)
    with ThreadPoolExecutor(min(len(files), 8), thread_name_prefix="netrain-upload") as pool:
        futures = [pool.submit(repo.log_artifact, str(path), sub or None)
                   for sub, path in files]
        errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return len(files)


def terminate(c: Any, run_id: str, status: str, end_time: int | None) -> None:
    c.set_terminated(run_id, status, end_time=end_time)
    _ARTIFACT_URIS.pop(run_id, None)


#: tracking URIs whose server has no whole-run route (a plain `mlflow server`): asked once
NO_WHOLE_RUN: set[str] = set()


@dataclass
class WholeRun:
    """A finished run as one whole: what create_run, log_batch, the uploads and
    set_terminated would send."""

    name: str
    tags: Mapping[str, str]
    start_time: int | None
    metrics: Sequence[tuple[str, float, int, int]]
    params: Mapping[str, str]
    files: Sequence[tuple[str, Path]]
    status: str
    end_time: int | None


@dataclass
class WholeAnswer:
    run_ids: list[str]  # of the runs done, in order
    failed: str | None = None  # the error of the run after them (which may exist in part)


def whole_runs(c: Any, experiment_id: str, runs: Sequence[WholeRun]) -> WholeAnswer | None:
    """Finished runs in one request to a `netrain server` (netrain.track.server_app), each
    created with its tags, its metrics and params logged, its files stored, its status set.
    None when the server has no such route (then nothing was written)."""
    import contextlib
    import getpass
    import json

    from mlflow.utils.rest_utils import http_request, verify_rest_response

    from netrain.track.server_app import WHOLE_RUN

    user = ""
    with contextlib.suppress(Exception):
        user = getpass.getuser()
    specs = [{"name": r.name, "tags": dict(r.tags), "start_time": r.start_time,
              "metrics": [list(m) for m in r.metrics], "params": dict(r.params),
              "status": r.status, "end_time": r.end_time, "user": user} for r in runs]
    creds = c._tracking_client.store.get_host_creds()
    with contextlib.ExitStack() as stack:
        parts = [(f"{i}:{sub}", (path.name, stack.enter_context(open(path, "rb"))))
                 for i, r in enumerate(runs) for sub, path in r.files]
        resp = http_request(creds, WHOLE_RUN, "POST", max_retries=0,
                            params={"experiment_id": str(experiment_id)},
                            data={"runs": json.dumps(specs)}, files=parts)
    if resp.status_code in (404, 405):
        NO_WHOLE_RUN.add(str(c.tracking_uri))
        return None
    verify_rest_response(resp, WHOLE_RUN)
    answer = resp.json()
    error = answer.get("error")
    return WholeAnswer([str(x) for x in answer["run_ids"]],
                       None if not error else f"{error.get('error_code')}: "
                                              f"{error.get('message')}")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the server's answer an MLflow error came with, if it came with one."""
    get = getattr(exc, "get_http_status_code", None)
    if get is None:
        return None
    try:
        return int(get())
    except Exception:
        return None
