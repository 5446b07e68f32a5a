"""The only module that imports mlflow: experiments per batch, parent/child runs, tags,
params, metrics, artifacts, notes. Imported lazily so `netrain --help` stays fast."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netrain.errors import TrackingError

_PARAM_MAX = 6000
_BATCH_MAX = 1000


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
        # Makes mlflow ui open the experiment on its runs, not on the GenAI overview.
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


def _clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        text = str(v).lower() if isinstance(v, bool) else str(v)
        out[str(k)[:250]] = text[:_PARAM_MAX]
    return out


def _common_parent(paths: Any) -> str | None:
    """A folder on the same filesystem as the files (so hard links work), if writable."""
    for p in paths:
        parent = Path(p).parent.parent
        if os.access(parent, os.W_OK):
            return str(parent)
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass
class RunHandle:
    """One MLflow run: a task's parent run or a network's child run."""

    tracker: Tracker
    run_id: str
    _pending: list[Any]
    _last_flush: float = 0.0

    def log_params(self, params: Mapping[str, Any], skip_existing: bool = False) -> None:
        from mlflow.entities import Param

        clean = _clean_params(params)
        if skip_existing and clean:
            have = self.tracker.client.get_run(self.run_id).data.params
            clean = {k: v for k, v in clean.items() if k not in have}
        items = [Param(k, v) for k, v in clean.items()]
        for i in range(0, len(items), 100):
            self.tracker.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.tracker.client.log_batch(self.run_id, tags=items)

    def log_epoch(self, epoch: int, logs: Mapping[str, Any], flush_every: float = 5.0) -> None:
        """Buffer one epoch's metrics; they are sent in batches, not one call per value."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for key, value in logs.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            self._pending.append(Metric(str(key), number, ts, int(epoch)))
        if time.monotonic() - self._last_flush >= flush_every:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        while self._pending:
            chunk, self._pending[:] = self._pending[:_BATCH_MAX], self._pending[_BATCH_MAX:]
            self.tracker.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_file():
            self.tracker.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, tags: Mapping[str, Any], artifacts: Mapping[str, Path], status: str) -> None:
        """End a network's run in three calls: the last metrics with the final tags, the
        artifacts (hard-linked into one folder, sent at once), the status."""
        from mlflow.entities import RunTag

        tag_items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        chunk, self._pending[:] = self._pending[:_BATCH_MAX], self._pending[_BATCH_MAX:]
        self.tracker.client.log_batch(self.run_id, metrics=chunk, tags=tag_items)
        self.flush()
        with tempfile.TemporaryDirectory(prefix=".netrain-art-",
                                         dir=_common_parent(artifacts.values())) as d:
            for sub, path in artifacts.items():
                if path.is_file():
                    (Path(d) / sub).mkdir()
                    _link_or_copy(path, Path(d) / sub / path.name)
            self.tracker.client.log_artifacts(self.run_id, d)
        self.tracker.client.set_terminated(self.run_id, status)

    def end(self, status: str) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        self.tracker.client.set_terminated(self.run_id, status)


class Tracker:
    """All of one task's tracking calls, through one client."""

    def __init__(self, uri: str, experiment_id: str) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        try:
            self.client = client(uri)
        except Exception as exc:
            raise TrackingError(f"cannot open tracking backend {_describe_uri(uri)}: "
                                f"{type(exc).__name__}") from None

    def parent_run(self, run_name: str, tags: Mapping[str, Any]) -> RunHandle:
        """Resume the run `mlflow run` created (MLFLOW_RUN_ID), or create one."""
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if run_id:
            handle = RunHandle(self, run_id, [])
            handle.set_tags({"mlflow.runName": run_name, **tags})
            return handle
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={k: str(v) for k, v in tags.items() if v is not None})
        return RunHandle(self, run.info.run_id, [])

    def child_run(self, parent: RunHandle, run_name: str, tags: Mapping[str, Any]) -> RunHandle:
        all_tags = {"mlflow.parentRunId": parent.run_id,
                    **{k: str(v) for k, v in tags.items() if v is not None}}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        return RunHandle(self, run.info.run_id, [])


def get_run(uri: str, run_id: str) -> Any:
    """The MLflow run with that id, or a TrackingError saying it is unknown."""
    check_reachable(uri)
    try:
        return client(uri).get_run(run_id)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise TrackingError(f"no MLflow run {run_id!r} in {_describe_uri(uri)}: "
                                "copy the run id from 'netrain show BATCH' or mlflow ui") from None
        raise TrackingError(f"cannot read run {run_id} from {_describe_uri(uri)}: "
                            f"{type(exc).__name__}") from None


def find_run(uris: list[str], run_id: str) -> tuple[str, Any]:
    """Look a run id up in several tracking backends; return (uri, run)."""
    errors: list[TrackingError] = []
    for uri in dict.fromkeys(uris):
        try:
            return uri, get_run(uri, run_id)
        except TrackingError as exc:
            errors.append(exc)
    # An unreachable backend matters more than "not found" in the others: it may hold the run.
    down = [e for e in errors if "unreachable" in str(e) or "cannot read" in str(e)]
    raise (down or errors or [TrackingError(f"no MLflow run {run_id!r}")])[0]


def set_run_note(uri: str, run_id: str, text: str) -> None:
    client(uri).set_tag(run_id, "mlflow.note.content", text)


def set_experiment_note(uri: str, experiment_id: str, text: str) -> None:
    client(uri).set_experiment_tag(experiment_id, "mlflow.note.content", text)


def close_runs(uri: str, run_ids: list[str], status: str) -> int:
    """Mark runs that are still RUNNING as ``status``; return how many were closed."""
    c = client(uri)
    closed = 0
    for run_id in run_ids:
        with contextlib.suppress(Exception):
            if c.get_run(run_id).info.status == "RUNNING":
                c.set_terminated(run_id, status)
                closed += 1
    return closed


@contextlib.contextmanager
def suppress_mlflow_noise() -> Iterator[None]:
    import logging

    logger = logging.getLogger("mlflow")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)
