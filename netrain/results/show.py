"""Rendering `netrain show`: text and JSON from status tables. It reads and writes nothing
(reading is status.py's and the executor's; healing is heal.py's)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from netrain.define.batch import Batch, retrain_jobs
from netrain.execute.status import BatchStatus, State


def text_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _waiting(st: BatchStatus) -> int:
    return sum(1 for m in st.models for t in m.tasks if t.events_waiting)


def _counts(st: BatchStatus) -> dict[str, int]:
    return {"planned": st.planned, "finished": st.count("finished"),
            "failed": st.count("failed"), "running": st.count("running")}


def overview(statuses: Sequence[BatchStatus], trainings_dir: Path | None,
             broken: Sequence[str] = (), note: str = "", as_json: bool = False) -> str:
    """One line per batch."""
    if as_json:
        return json.dumps([{"id": s.id, "path": str(s.path), "created": s.created,
                            "description": s.description,
                            "models": [m.key for m in s.models], **_counts(s)}
                           for s in statuses], indent=1)
    if not statuses:
        where = trainings_dir or "(no trainings_dir)"
        return f"no batches in {where}: create one with 'netrain generate'"
    rows = []
    for s in statuses:
        c = _counts(s)
        desc = " ".join(s.description.split())
        rows.append([s.id, s.created[:16].replace("T", " "), _models_cell(s), str(c["planned"]),
                     str(c["finished"]), str(c["failed"]), str(c["running"]),
                     desc[:50] + ("..." if len(desc) > 50 else "")])
    out = text_table(rows, ["BATCH", "CREATED", "MODELS", "NETS", "FINISHED", "FAILED", "RUNNING",
                        "DESCRIPTION"])
    extra = [f"warning: {b}" for b in broken]
    if note:
        extra.append(note)
    return "\n".join([out, *extra])


def _models_cell(s: BatchStatus, width: int = 50) -> str:
    """``classifier.clu_one,classifier.chransynth (+1)``: as many names as fit, then a count."""
    names = [m.key for m in s.models]
    shown: list[str] = []
    for i, name in enumerate(names):
        rest = len(names) - i - 1
        suffix = f" (+{rest})" if rest else ""
        if shown and len(",".join([*shown, name])) + len(suffix) > width:
            return ",".join(shown) + f" (+{len(names) - len(shown)})"
        shown.append(name)
    return ",".join(shown)


def detail(batch: Batch, st: BatchStatus, all_tasks: bool = False, note: str = "",
           retrain_states: Mapping[str, str] | None = None, as_json: bool = False) -> str:
    """One batch: a line per model, then its unfinished (or, with all_tasks, every) task."""
    jobs: list[dict[str, Any]] = [
        {"of": r.of, "model": r.model, "index": r.index, "job_id": r.job_id,
         "executor": r.executor, "scheduler": (retrain_states or {}).get(r.job_id, "")}
        for r in retrain_jobs(batch)]
    if as_json:
        return json.dumps({
            "id": st.id, "path": str(st.path), "description": st.description, **_counts(st),
            "models": [{"model": m.key, "tasks": [{
                "index": t.index, "state": t.state.value, "nets": t.nets,
                "finished": t.finished, "failed": t.failed, "running": t.running,
                "log": t.log, "error": t.error, "run_id": t.run_id, "scheduler": t.scheduler,
                "slurm_job_id": t.slurm_job_id, "attempt": t.attempt,
                "resumable": t.resumable, "resume_epoch": t.resume_epoch, "lost": t.lost,
                "events_waiting": t.events_waiting} for t in m.tasks]} for m in st.models],
            "events_waiting": _waiting(st),
            "retrains": [{"of": r.retrain_of, "model": r.model, "index": r.index,
                          "state": r.state, "slurm_job_id": r.slurm_job_id,
                          "runs": {k: n.run_id for k, n in r.nets.items()}}
                         for r in st.retrains],
            "retrain_jobs": jobs,
        }, indent=1)
    m = batch.manifest
    lines = [f"batch {st.id}  {st.path}",
             f"created {st.created}  description: {st.description!r}",
             f"code {m.code.get('digest', '')[:19]}  git {m.code.get('git_commit') or '-'}  "
             f"tracking {m.tracking['uri']} (experiment {m.tracking['experiment_id']})", ""]
    rows = []
    for ms in st.models:
        rows.append([ms.key, str(len(ms.tasks)), str(ms.planned), str(ms.count("finished")),
                     str(ms.count("failed")), str(ms.count("running")),
                     str(ms.tasks_in(State.PENDING)),
                     str(sum(1 for t in ms.tasks if t.state.is_failure))])
    lines.append(text_table(rows, ["MODEL", "TASKS", "NETS", "FINISHED", "FAILED", "RUNNING",
                               "PENDING-TASKS", "FAILED-TASKS"]))
    task_rows = []
    for ms in st.models:
        for t in ms.tasks:
            if not all_tasks and t.state is State.FINISHED:
                continue
            if not all_tasks and t.state is State.PENDING and not t.scheduler:
                continue
            where = t.log if t.state.is_failure else ""
            state = t.state.value
            if t.state is State.RESUMABLE:
                state += f" (epoch {t.resume_epoch})"
            task_rows.append([ms.key, str(t.index), state,
                              t.scheduler or "-", f"{t.finished}/{t.nets}",
                              t.slurm_job_id or "-", t.run_id[:12] or "-",
                              (t.error[:60] + (" log: " + where if where else "")).strip()])
    if task_rows:
        lines += ["", text_table(task_rows, ["MODEL", "TASK", "STATE", "SLURM", "NETS", "JOB",
                                          "RUN", "ERROR / LOG"])]
    pending = sum(ms.tasks_in(State.PENDING) for ms in st.models)
    if pending and not all_tasks:
        lines.append(f"({pending} task(s) not started yet; --all lists every task)")
    resumable = sum(ms.tasks_in(State.RESUMABLE) for ms in st.models)
    if resumable:
        lines.append(f"{resumable} task(s) resumable from their checkpoints: netrain run "
                     f"{st.id} (here) or netrain resubmit {st.id} --failed (SLURM)")
    waiting = _waiting(st)
    if waiting:
        lines.append(f"{waiting} task(s) have tracking events not yet in MLflow: netrain sync "
                     f"{st.id}")
    if st.code_edited:
        lines.append("the batch's code snapshot was edited since generate: networks trained "
                     "since are tagged code_edited=true")
    if st.retrains or jobs:
        lines += ["", "retrains:"]
        for r in st.retrains:
            nets = ", ".join(f"{n.run_id[:12] or '(not in MLflow yet)'} {n.state}"
                             for n in r.nets.values())
            lines.append(f"  of {r.retrain_of[:12]}  {r.model}[{r.index}]  {r.state}  {nets}")
        for j in jobs:
            lines.append(f"  job {j['job_id']} ({j['executor']}) of {j['of'][:12]}  "
                         f"{j['model']}[{j['index']}]  {j['scheduler'] or '-'}")
    if m.notes:
        lines += ["", "notes:"]
        for n in m.notes:
            lines.append(f"  {n.get('at', '')[:16]} {n.get('target', '')}: {n.get('text', '')}")
    if note:
        lines += ["", note]
    return "\n".join(lines)
