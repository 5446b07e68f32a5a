"""Find the batch behind an MLflow run id (for retrain and note)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netrain.define.batch import Batch, find_batch, list_batches
from netrain.errors import BatchError, TrackingError

if TYPE_CHECKING:
    from netrain.track.mlflow_store import RunInfo

RUN_ID_CHARS = set("0123456789abcdef")


@dataclass
class RunRef:
    """A run and the batch it belongs to."""

    run: RunInfo
    batch: Batch

    @property
    def uri(self) -> str:
        return self.run.uri

    @property
    def tags(self) -> dict[str, str]:
        return self.run.tags


def looks_like_run_id(text: str) -> bool:
    return len(text) == 32 and set(text) <= RUN_ID_CHARS


def candidate_uris(trainings_dir: Path | None, configured: str | None) -> list[str]:
    uris: list[str] = [configured] if configured else []
    for p in list_batches(trainings_dir) if trainings_dir else []:
        try:
            uris.append(Batch.load(p).manifest.tracking["uri"])
        except BatchError:
            continue
    return list(dict.fromkeys(uris))


def find_run(run_id: str, trainings_dir: Path | None, configured_uri: str | None) -> RunRef:
    from netrain.track import mlflow_store

    if not looks_like_run_id(run_id):
        raise TrackingError(f"{run_id!r} is not an MLflow run id (32 hex characters): copy it "
                            "from 'netrain show BATCH' or mlflow ui")
    uris = candidate_uris(trainings_dir, configured_uri)
    if not uris:
        raise TrackingError("no tracking URI known: run where netrain.yaml is, or pass --config")
    run = mlflow_store.find_run(uris, run_id)
    batch_id = run.tags.get("batch")
    if not batch_id:
        raise TrackingError(f"run {run_id} has no 'batch' tag: it was not made by netrain")
    try:
        exp_dir = mlflow_store.experiment_tag(run.uri, run.experiment_id, "netrain.batch_dir")
    except TrackingError:
        exp_dir = None  # the batch id finds it too
    if exp_dir and (Path(exp_dir) / "batch.yaml").is_file():
        batch_dir = Path(exp_dir)
    else:
        batch_dir = find_batch(batch_id, trainings_dir)
    return RunRef(run, Batch.load(batch_dir))
