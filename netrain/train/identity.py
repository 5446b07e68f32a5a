"""Who a task is: its command line (TaskArgs), what its environment says, read once
(TaskIdentity), the key of its runs and the tags they carry (pure functions); the GPU probe
is apart (gpu_model)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain import env as names
from netrain.define.params import TASK_PARAMS, parse_bool
from netrain.define.spec import ModelName
from netrain.execute.records import TaskRecord, retrain_key
from netrain.track.journal import journal_path


@dataclass(frozen=True)
class TaskArgs(ModelName):
    """The task's command line (the parameters are netrain.define.params.TASK_PARAMS)."""

    cls: str
    architecture: str
    nb_epoch: int
    epoch_samples: int
    nnets: int
    intelligent: bool
    trainingrun: int
    net_index: int = -1
    retrain_of: str = ""
    from_weights: str = ""
    pack: bool = False

    @property
    def model_key(self) -> str:
        return self.key


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _none(text: str) -> str:
    return "" if text in ("none", "None", "") else text


def parse_task_args(argv: list[str]) -> TaskArgs:
    """The task's command line, as the sbatch script and the MLproject pass it."""
    p = argparse.ArgumentParser(prog="netrain task", add_help=True)
    for param in TASK_PARAMS:
        dest = "cls" if param.name == "class" else param.name
        flags = {f"--{param.name.replace('_', '-')}", f"--{param.name}"}
        kind: Any = {int: int, bool: _bool}.get(param.type, _none if param.default else str)
        if param.default is None:
            p.add_argument(*sorted(flags), dest=dest, type=kind, required=True)
        else:
            p.add_argument(*sorted(flags), dest=dest, type=kind, default=kind(param.default))
    ns = p.parse_args(argv)
    return TaskArgs(**vars(ns))


def slurm_job_id(environ: Mapping[str, str]) -> str:
    """``ARRAYJOB_TASK`` for an array task, else the job id ("" outside SLURM)."""
    arr = environ.get("SLURM_ARRAY_JOB_ID")
    if arr:
        return f"{arr}_{environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return environ.get("SLURM_JOB_ID", "")


@dataclass(frozen=True)
class TaskIdentity:
    """What the task's environment says about it, read once as it starts."""

    #: "local" or "slurm"
    executor: str
    slurm_job_id: str
    #: its log file ("" unknown), attached to its run at the end
    log: str
    #: a retrain's key ("" for an array task)
    retrain_key: str
    #: the journal its events go to (the launcher's choice, else the batch's path for it)
    journal: Path
    experiment_id: str
    tracking_uri: str
    #: NETRAIN_RERUN: "1" train again from scratch, "finished" only if finished, else ""
    rerun: str = ""
    #: the tags the launcher gives the task run (as `mlflow run` would)
    launcher_tags: Mapping[str, str] = field(default_factory=dict)
    slurm_restart_count: str = ""
    #: a run MLflow's own launcher opened for the task (`mlflow run`): the task run adopts it
    adopt_run_id: str = ""
    host: str = ""

    @classmethod
    def read(cls, args: TaskArgs, batch_dir: Path, tracking: Mapping[str, Any],
             environ: Mapping[str, str] | None = None) -> TaskIdentity:
        """From ``environ`` (default os.environ); ``tracking``: the batch's (its manifest's)."""
        e = os.environ if environ is None else environ
        executor = e.get(names.EXECUTOR) or ("slurm" if e.get("SLURM_JOB_ID") else "local")
        key = retrain_key(args.retrain_of, e) if args.retrain_of else ""
        jpath = e.get(names.JOURNAL)
        tags: dict[str, str] = {}
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            tags = dict(json.loads(e.get(names.RUN_TAGS) or "{}"))
        return cls(
            executor=executor,
            slurm_job_id=slurm_job_id(e) if executor == "slurm" else "",
            log=e.get(names.LOG, ""),
            retrain_key=key,
            journal=Path(jpath) if jpath else journal_path(batch_dir, args.slug,
                                                           args.trainingrun, key),
            experiment_id=e.get("MLFLOW_EXPERIMENT_ID") or str(tracking.get("experiment_id",
                                                                             "")),
            tracking_uri=e.get("MLFLOW_TRACKING_URI") or str(tracking.get("uri", "")),
            rerun=e.get(names.RERUN, ""),
            launcher_tags=tags,
            slurm_restart_count=e.get("SLURM_RESTART_COUNT", ""),
            adopt_run_id=e.get("MLFLOW_RUN_ID", ""),
            host=socket.gethostname(),
        )


def task_key(base: str, previous: TaskRecord | None, rerun: str, attempt: int) -> str:
    """The same key (so the same MLflow run) for every attempt of a task, unless it is
    explicitly trained again from scratch (rerun "1"; "finished" only when the previous
    attempt finished it: `submit --tasks` of a finished task). ``base``: the task's
    ``slug/index`` or ``retrain/KEY``."""
    if previous is not None and (rerun == "1" or (rerun == "finished"
                                                  and previous.state == "finished")):
        return f"{base}~{attempt}"
    if previous is not None and previous.key:
        return previous.key
    return base


def common_tags(who: TaskIdentity, args: TaskArgs, batch_id: str) -> dict[str, Any]:
    """The tags of every run of the task, its own and its networks'."""
    return {"batch": batch_id, "class": args.cls, "architecture": args.architecture,
            "array_index": args.trainingrun, "slurm_job_id": who.slurm_job_id or None,
            "executor": who.executor}


def source_tags(project: Mapping[str, str], host: str, code_edited: bool) -> dict[str, str]:
    """The tags `mlflow run` (and the launcher) give a project run, whoever started the task
    (``project``: netrain.execute.launcher.project_tags), with where it ran."""
    return {**project, "host": host, "code_edited": str(code_edited).lower()}


def task_run_tags(base: Mapping[str, Any], who: TaskIdentity, *, attempt: int, key: str,
                  retrain_of: str, gpu: str) -> dict[str, Any]:
    """The task run's tags: ``base`` (common and source tags), the attempt, the launcher's
    project tags, the GPU, SLURM's restart count, and what it retrains or reruns."""
    tags: dict[str, Any] = {**base, "netrain.attempt": attempt, **who.launcher_tags}
    if gpu:
        tags["gpu"] = gpu
    if who.slurm_restart_count:
        tags["slurm_restart_count"] = who.slurm_restart_count
    if retrain_of:
        tags["retrain_of"] = retrain_of
    if "~" in key:
        tags["rerun"] = attempt
    return tags


def network_run_tags(base: Mapping[str, Any], job: Any, *, attempt: int, task_key: str,
                     retrain_of: str) -> dict[str, Any]:
    """A network's run tags: ``base``, its index, name and own tags, how it was packed."""
    tags: dict[str, Any] = {**base, "net_index": job.net_index, "name": job.config.name,
                            **job.config.tags}
    if "~" in task_key:  # trained again from scratch (netrain run --rerun): new runs
        tags["rerun"] = attempt
    if retrain_of:
        tags["retrain_of"] = retrain_of
    packing = vars(job)
    if packing.get("pack_group"):
        tags["netrain.packed"] = packing["pack_group"]  # trained with this many others
    if packing.get("pack_fallback"):
        tags["netrain.pack_fallback"] = str(packing["pack_fallback"])[:500]
        tags["netrain.packed"] = 0  # its run may have been opened for a group first
    return tags


def gpu_model(base: Path = Path("/proc/driver/nvidia/gpus")) -> str:
    """The GPU's model name when the NVIDIA driver shows one (read from /proc, no import)."""
    with contextlib.suppress(OSError):
        for info in sorted(base.iterdir()):
            for line in (info / "information").read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
    return ""
