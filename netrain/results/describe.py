"""`netrain describe`: everything known about one network, gathered from its MLflow run,
the batch's manifest and the task records."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from netrain.results.networks import networks

_NOT_PARAMS = {"wpath", "archpath", "metricspath", "batch_dir"}


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).astimezone().isoformat(
        timespec="seconds")


def gather(ref: Any) -> dict[str, Any]:
    """A JSON-able description of the run behind a lookup.RunRef."""
    from netrain.results import mlflow_results

    run, batch = ref.run, ref.batch
    tags = dict(run.tags)
    params = dict(run.params)
    m = batch.manifest
    run_id = run.run_id
    net = next((n for n in networks(batch) if n.run_id == run_id), None)
    model_key = f"{tags.get('class', '')}.{tags.get('architecture', '')}"
    segment: dict[str, Any] = {}
    try:
        seg = m.model(model_key).segment_for(int(tags.get("array_index", -1)))
        segment = {"nnets": seg.nnets, "nb_epoch": seg.nb_epoch,
                   "epoch_samples": seg.epoch_samples, "intelligent": seg.intelligent,
                   "added": seg.added}
    except Exception:
        segment = {}
    files: dict[str, Any] = {}
    if net is not None:
        for what, p in (("weights", net.weights), ("architecture", net.arch),
                        ("metrics", net.metrics_csv)):
            files[what] = {"path": p, "exists": bool(p) and Path(p).is_file()}
    files["artifacts"] = run.artifact_uri
    lineage: dict[str, Any] = {"retrain_of": tags.get("retrain_of", "")}
    lineage["retrains"] = [
        {"run_id": r.info.run_id, "status": r.info.status,
         "final": {k: v for k, v in r.data.metrics.items()}}
        for r in mlflow_results.retrains_of(ref.uri, run.experiment_id, run_id)]
    lineage["retrain_requests"] = [r for r in m.retrains if r.get("of") == run_id]
    code = dict(m.code)
    return {
        "run_id": run_id,
        "kind": "network" if "net_index" in tags else "task",
        "name": run.name,
        "status": run.status,
        "started": _when(run.start_time), "ended": _when(run.end_time),
        "batch": {"id": m.id, "path": str(batch.path), "description": m.description,
                  "created": m.created, "experiment_id": run.experiment_id,
                  "tracking_uri": ref.uri},
        "model": model_key,
        "task": _int(tags.get("array_index")), "net": _int(tags.get("net_index")),
        "parent_run_id": tags.get("mlflow.parentRunId", ""),
        "seed": _int(params.get("seed")),
        "segment": segment,
        "params": {k: v for k, v in sorted(params.items()) if k not in _NOT_PARAMS},
        "code": {"digest": code.get("digest", ""), "files": code.get("files"),
                 "source": code.get("source", ""), "git_commit": code.get("git_commit"),
                 "git": code.get("git", {}),
                 "main_script": m.main_script,
                 "snapshot": str(batch.path / "code")},
        "versions": dict(m.versions) or {"netrain": m.netrain_version},
        "environment": dict(m.environment), "launcher": m.launcher,
        "host": tags.get("host") or (net.host if net else ""),
        "executor": tags.get("executor", ""),
        "slurm_job_id": tags.get("slurm_job_id") or (net.slurm_job_id if net else ""),
        "epochs": _int(tags.get("epochs")) if "epochs" in tags else (net.epochs if net else None),
        "stopped_early": tags.get("stopped_early"),
        "final_metrics": dict(run.metrics) or (dict(net.final) if net else {}),
        "record_state": net.state if net else "",
        "error": tags.get("error") or (net.error if net else ""),
        "files": files,
        "lineage": lineage,
        "note": tags.get("mlflow.note.content", ""),
        "tags": {k: v for k, v in sorted(tags.items()) if not k.startswith("mlflow.")},
    }


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def as_text(d: dict[str, Any]) -> str:
    b, c = d["batch"], d["code"]
    git = c.get("git") or {}
    gitline = (f"{git.get('commit', '')[:12]} on {git.get('branch') or '(detached)'}"
               f"{' (dirty)' if git.get('dirty') else ''}" if git else (c.get("git_commit")
                                                                      or "not a git checkout"))
    lines = [
        f"run        {d['run_id']}  ({d['kind']} '{d['name']}', {d['status']})",
        f"batch      {b['id']}  {b['path']}",
        f"           {b['description']!r}, created {b['created']}, experiment "
        f"{b['experiment_id']} in {b['tracking_uri']}",
        f"model      {d['model']}  task {d['task']}  net {d['net']}  seed {d['seed']}",
        f"trained    {d['started']} .. {d['ended']}  on {d['host'] or '?'}  "
        f"({d['executor'] or '?'}{', job ' + d['slurm_job_id'] if d['slurm_job_id'] else ''})",
        f"epochs     {d['epochs']}{' (stopped early)' if d['stopped_early'] == 'True' else ''}",
        "final      " + (", ".join(f"{k}={v:.6g}" for k, v in sorted(d["final_metrics"].items()))
                         or "-"),
        f"code       {c['digest'][:19]}  ({c['files']} files, main {c['main_script']})  "
        f"git {gitline}",
        f"           snapshot {c['snapshot']}",
        "versions   " + ", ".join(f"{k} {v}" for k, v in d["versions"].items()),
    ]
    if d["error"]:
        lines.append(f"error      {d['error']}")
    lines.append("params     " + ", ".join(f"{k}={v}" for k, v in d["params"].items()))
    for what, f in d["files"].items():
        if isinstance(f, dict):
            lines.append(f"{what:<10} {f['path']}{'' if f['exists'] else '  (missing)'}")
    lines.append(f"artifacts  {d['files']['artifacts']}")
    lin = d["lineage"]
    if lin["retrain_of"]:
        lines.append(f"retrain of {lin['retrain_of']}")
    for r in lin["retrains"]:
        fin = ", ".join(f"{k}={v:.6g}" for k, v in sorted(r["final"].items()))
        lines.append(f"retrained  as {r['run_id']} ({r['status']}) {fin}")
    if d["note"]:
        lines.append(f"note       {d['note']}")
    return "\n".join(lines)


def as_json(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=1, default=str)
