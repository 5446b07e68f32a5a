"""A batch's trained networks as read from its own files (records/*.json, metrics/*.csv)."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netrain.define.batch import Batch, network_files
from netrain.errors import NetrainError
from netrain.execute.records import TaskRecord, read_model_records, read_retrain_records


@dataclass
class Network:
    """One network of a batch: where it came from, how it ended, where its files are."""

    model: str
    task: int
    net: int
    run_id: str
    name: str
    stem: str
    state: str
    epochs: int
    final: dict[str, float]
    weights: str
    arch: str
    metrics_csv: str
    retrain_of: str = ""
    parent_run_id: str = ""
    host: str = ""
    slurm_job_id: str = ""
    error: str = ""
    history: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        return d


def shipped_runs(batch: Batch, rec: TaskRecord) -> dict[str, str]:
    """Tracking key -> MLflow run id, for the runs of the task already shipped."""
    if not rec.journal:
        return {}
    from netrain.track.journal import read_state

    runs = read_state(batch.path / rec.journal).get("runs") or {}
    return {str(k): str(v) for k, v in runs.items()}


def _networks_of(batch: Batch, rec: TaskRecord) -> list[Network]:
    out = []
    runs = shipped_runs(batch, rec)
    for key, n in sorted(rec.nets.items(), key=lambda kv: int(kv[0])):
        stem = n.stem
        weights, arch, metrics = network_files(stem) if stem else ("", "", "")
        out.append(Network(
            model=rec.model, task=rec.index, net=int(key),
            run_id=n.run_id or runs.get(n.key, ""), name=n.name,
            stem=stem, state=n.state, epochs=n.epochs, final=dict(n.final),
            weights=str(batch.path / "weights" / weights) if stem else "",
            arch=str(batch.path / "archs" / arch) if stem else "",
            metrics_csv=str(batch.path / "metrics" / metrics) if stem else "",
            retrain_of=rec.retrain_of, parent_run_id=rec.parent_run_id or runs.get(rec.key, ""),
            host=rec.host,
            slurm_job_id=rec.slurm_job_id, error=n.error))
    return out


def networks(batch: Batch, retrains: bool = True) -> list[Network]:
    """Every network the batch's task records know, in model, task, network order."""
    out: list[Network] = []
    for m in batch.manifest.models:
        recs = read_model_records(batch.path, m.slug)
        for index in sorted(recs):
            out += _networks_of(batch, recs[index])
    if retrains:
        for rec in read_retrain_records(batch.path):
            out += _networks_of(batch, rec)
    return out


def read_history(path: str | Path) -> dict[str, list[float]]:
    """A metrics CSV (``epoch,loss,val_loss,...``) as columns; {} if missing or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    if not rows:
        return {}
    header = rows[0]
    cols: dict[str, list[float]] = {h: [] for h in header if h != "epoch"}
    for row in rows[1:]:
        for h, v in zip(header, row, strict=False):
            if h == "epoch":
                continue
            try:
                cols[h].append(float(v))
            except ValueError:
                cols[h].append(math.nan)
    return cols


def load_histories(nets: list[Network]) -> None:
    for n in nets:
        if n.metrics_csv and not n.history:
            n.history = read_history(n.metrics_csv)


def metric_names(nets: list[Network]) -> list[str]:
    names: dict[str, None] = {}
    for n in nets:
        for k in n.final:
            names.setdefault(k, None)
    return list(names)


def default_metric(names: list[str]) -> str:
    """The metric that ranks networks when none is given: val_loss, else loss, else the
    first one the batch has (``best`` and ``report`` alike)."""
    for m in ("val_loss", "loss"):
        if m in names:
            return m
    return names[0] if names else "loss"


def default_mode(metric: str) -> str:
    """``max`` for accuracy-like metrics, ``min`` for losses and errors."""
    m = metric.lower()
    return "max" if any(w in m for w in ("acc", "auc", "precision", "recall", "f1", "r2")) \
        else "min"


def best(nets: list[Network], metric: str, mode: str | None = None, top: int = 5,
         models: bool = False) -> list[Network]:
    """The ``top`` finished networks by their final ``metric`` (per model if ``models``)."""
    mode = mode or default_mode(metric)
    done = [n for n in nets if n.state == "finished"]
    scored = [n for n in done if metric in n.final and not math.isnan(n.final[metric])]
    if done and not scored:
        known = ", ".join(metric_names(done)) or "none"
        raise NetrainError(f"no finished network has the metric {metric!r}: the batch's "
                           f"metrics are {known} (pass one with --metric)")
    scored.sort(key=lambda n: n.final[metric], reverse=(mode == "max"))
    if not models:
        return scored[:top]
    out: list[Network] = []
    seen: dict[str, int] = {}
    for n in scored:
        if seen.get(n.model, 0) < top:
            seen[n.model] = seen.get(n.model, 0) + 1
            out.append(n)
    return out
