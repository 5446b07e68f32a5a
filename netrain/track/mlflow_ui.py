"""MLflow's web UI on a project's tracking store: starting it, and a batch's views in it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from netrain.errors import NetrainError


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


#: mlflow ui 3.17 opens every experiment on an empty GenAI overview in a fresh browser; this
#: URL parameter switches it to "Model training", which opens an experiment on its runs.
ML_VIEW = "workflowType=machine_learning"


def url(base: str, experiment_id: str | None) -> str:
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}"
    return f"{base}/#/experiments?{ML_VIEW}"


# The batch's views. mlflow ui loads runs 100 at a time, newest first, and folds each
# network under its task's run: the first page of a big batch is the last tasks' networks,
# and the other tasks sit behind "Load more". A view is what its share link holds: search
# facets (a filter, an order) and columns, kept as an experiment tag
# ``mlflow.sharedViewState.<key>`` and opened by ``viewStateShareKey=<key>`` in the URL.
# The tasks view filters on tags only task runs carry, so every task is on the first page
# whatever the batch's size; its columns are the summary each task run gets at its end.

#: A task run: its array index, and no network index (the report run has neither).
TASK_FILTER = "tags.array_index IS NOT NULL AND tags.net_index IS NULL"
NETWORK_FILTER = "tags.net_index IS NOT NULL"
TASKS_VIEW = "netrain-tasks"
#: How many networks the best view shows.
BEST = 20
_SHARE_TAG = "mlflow.sharedViewState."


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # mlflow ui's column ids


def _literal(value: float) -> str:
    """A float as mlflow's filter parser reads it back exactly (positional: it refuses
    ``1.5e+00``)."""
    return format(Decimal(repr(value)), "f")


def view_url(base: str, experiment_id: str, key: str) -> str:
    return f"{url(base, experiment_id)}&viewStateShareKey={quote(key)}"


@dataclass(frozen=True)
class BestView:
    key: str
    metric: str
    mode: str
    count: int  # networks it shows


def main_metric(c: Any, experiment_id: str) -> str:
    """The batch's main metric: ``val_loss`` when its networks have one, else ``loss``
    (the two a task run's summary holds)."""
    runs = c.search_runs([experiment_id], NETWORK_FILTER, order_by=["metrics.`val_loss` ASC"],
                         max_results=1)
    return "val_loss" if runs and "val_loss" in runs[0].data.metrics else "loss"


def _write(c: Any, experiment_id: str, key: str, state: dict[str, Any]) -> None:
    c.set_experiment_tag(experiment_id, _SHARE_TAG + key, json.dumps(state, sort_keys=True))


def write_tasks_view(c: Any, experiment_id: str, metric: str) -> str:
    """The view of the batch's task runs, one row each, in the order they started: model
    (class, architecture), array index, networks finished, best and median final ``metric``.
    A task's run page lists its networks (its child runs)."""
    _write(c, experiment_id, TASKS_VIEW, {
        "searchFilter": TASK_FILTER, "orderByKey": "attributes.start_time", "orderByAsc": True,
        "selectedColumns": [_column("tags", "class"), _column("tags", "architecture"),
                            _column("tags", "array_index"),
                            _column("metrics", "networks_finished"),
                            _column("metrics", f"best_{metric}"),
                            _column("metrics", f"median_{metric}")]})
    return TASKS_VIEW


def write_best_view(c: Any, experiment_id: str, metric: str, mode: str,
                    top: int = BEST) -> BestView | None:
    """The view of the batch's ``top`` best networks by their final ``metric`` (``mode``
    min or max), best first: network runs whose metric is at least as good as the
    ``top``-th's. None when no network has the metric yet."""
    import math

    flt = NETWORK_FILTER
    order = "ASC" if mode == "min" else "DESC"
    runs = c.search_runs([experiment_id], flt, order_by=[f"metrics.`{metric}` {order}"],
                         max_results=2 * top)
    values = [r.data.metrics[metric] for r in runs if metric in r.data.metrics
              and math.isfinite(r.data.metrics[metric])][:top]
    if not values:
        return None
    cmp = "<=" if mode == "min" else ">="
    key = f"netrain-best-{metric}-{mode}"
    _write(c, experiment_id, key, {
        "searchFilter": f"{flt} AND metrics.`{metric}` {cmp} {_literal(values[-1])}",
        "orderByKey": _column("metrics", metric), "orderByAsc": mode == "min",
        "selectedColumns": [_column("tags", "class"), _column("tags", "architecture"),
                            _column("tags", "array_index"), _column("tags", "net_index"),
                            _column("metrics", metric)]})
    return BestView(key=key, metric=metric, mode=mode, count=len(values))


def write_views(uri: str, experiment_id: str) -> tuple[str, BestView | None]:
    """Write the batch's tasks view and its best-networks view (by the main metric)."""
    from netrain.track.mlflow_store import check_reachable, client

    check_reachable(uri)
    c = client(uri)
    metric = main_metric(c, experiment_id)
    return (write_tasks_view(c, experiment_id, metric),
            write_best_view(c, experiment_id, metric, "min"))


def command(uri: str, trainings_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The mlflow ui command line and environment: one worker, no job runner, no telemetry,
    127.0.0.1 only; new artifacts (none from netrain) would go under the trainings dir."""
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--artifacts-destination", str(Path(trainings_dir) / "mlartifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = dict(os.environ)
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true"})
    return argv, env


def check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise NetrainError(f"port {port} on 127.0.0.1 is in use: pass another one with "
                               "--port") from None


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own process group, so stopping it stops its worker too.
    # Its messages go to stderr: stdout carries only the URL.
    return subprocess.Popen(argv, env=env, start_new_session=True, stdout=sys.stderr)


def wait_healthy(proc: subprocess.Popen[bytes], base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NetrainError(f"mlflow ui exited with status {proc.returncode} before it "
                               "answered (see its messages above)")
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(base + "/health", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise NetrainError(f"mlflow ui did not answer on {base} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
