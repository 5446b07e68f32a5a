"""Find the batch behind an MLflow run id (for retrain and note)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netrain.batch import Batch, find_batch, list_batches
from netrain.errors import BatchError, TrackingError

RUN_ID_CHARS = set("0123456789abcdef")


@dataclass
class RunRef:
    uri: str
    run: Any
    batch: Batch

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.run.data.tags)


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
    from netrain import tracking

    if not looks_like_run_id(run_id):
        raise TrackingError(f"{run_id!r} is not an MLflow run id (32 hex characters): copy it "
                            "from 'netrain show BATCH' or mlflow ui")
    uris = candidate_uris(trainings_dir, configured_uri)
    if not uris:
        raise TrackingError("no tracking URI known: run where netrain.yaml is, or pass --config")
    uri, run = tracking.find_run(uris, run_id)
    tags = run.data.tags
    batch_id = tags.get("batch")
    if not batch_id:
        raise TrackingError(f"run {run_id} has no 'batch' tag: it was not made by netrain")
    batch_dir = None
    exp_dir = None
    try:
        exp = tracking.client(uri).get_experiment(run.info.experiment_id)
        exp_dir = exp.tags.get("netrain.batch_dir")
    except Exception:
        exp_dir = None
    if exp_dir and (Path(exp_dir) / "batch.yaml").is_file():
        batch_dir = Path(exp_dir)
    else:
        batch_dir = find_batch(batch_id, trainings_dir)
    return RunRef(uri, run, Batch.load(batch_dir))
