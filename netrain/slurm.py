"""The only place that runs sbatch, squeue, sacct, scancel and scontrol.

Pure parsers (``parse_*``) work on text; the few functions that call out take a ``runner``
so tests can feed recorded output to the parsers. Argument lists, never a shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netrain.batch import Batch, Job, ModelEntry, now_iso
from netrain.errors import SchedulerError
from netrain.spec import format_indices

DEFAULT_MAX_ARRAY_SIZE = 1001


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], Result]


def run_command(argv: Sequence[str], timeout: float = 60) -> Result:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]} did not answer within {timeout:.0f} s")
    return Result(p.returncode, p.stdout, p.stderr)


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


# ------------------------------------------------------------------------------- parsers

def parse_max_array_size(config_text: str) -> int:
    m = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", config_text, re.M)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def parse_job_id(sbatch_out: str) -> str:
    """`sbatch --parsable` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    text = sbatch_out.strip().splitlines()[-1] if sbatch_out.strip() else ""
    job = text.split(";")[0].strip()
    if not job.isdigit():
        raise SchedulerError(f"sbatch printed {sbatch_out.strip()!r} instead of a job id")
    return job


def split_array(indices: Sequence[int], max_array_size: int) -> list[tuple[int, list[int]]]:
    """Split indices so each SLURM array index stays below MaxArraySize.

    The limit bounds the index, not the count: index i goes to the chunk with offset
    ``(i // M) * M`` as SLURM index ``i - offset``; the task adds the offset back.
    """
    if max_array_size < 1:
        raise SchedulerError(f"MaxArraySize {max_array_size} is not usable")
    chunks: dict[int, list[int]] = {}
    for i in sorted(set(indices)):
        off = (i // max_array_size) * max_array_size
        chunks.setdefault(off, []).append(i - off)
    return sorted(chunks.items())


def expand_task_ids(text: str) -> list[int]:
    """``"3"`` / ``"[5-9%2]"`` / ``"[1,3-4]"`` -> indices."""
    text = text.strip().strip("[]").split("%")[0]
    out: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            if lo.isdigit() and hi.isdigit():
                out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
    return out


def parse_job_states(text: str) -> dict[str, dict[int, str]]:
    """Lines ``JOBID_TASK|STATE`` (squeue -r / sacct -X -P) -> {array job: {task: STATE}}.

    Ranges such as ``123_[4-9]`` expand to every index; a plain ``123`` (not an array) is
    kept under task -1.
    """
    out: dict[str, dict[int, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        jobid, state = parts[0].strip(), parts[1].strip().split(" ")[0].upper()
        if "_" in jobid:
            base, tasks = jobid.split("_", 1)
            for t in expand_task_ids(tasks):
                out.setdefault(base, {})[t] = state
        elif jobid.isdigit():
            out.setdefault(jobid, {})[-1] = state
    return out


# ---------------------------------------------------------------------------- operations

def max_array_size(runner: Runner = run_command) -> int:
    r = runner(["scontrol", "show", "config"])
    return parse_max_array_size(r.stdout) if r.returncode == 0 else DEFAULT_MAX_ARRAY_SIZE


def sbatch(script: str, array: str, offset: int, runner: Runner = run_command,
           extra: Sequence[str] = ()) -> str:
    argv = ["sbatch", "--parsable", f"--array={array}",
            f"--export=ALL,NETRAIN_INDEX_OFFSET={offset}", *extra, script]
    r = runner(argv)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise SchedulerError(f"sbatch refused {script}: {msg[-1] if msg else 'no message'}")
    return parse_job_id(r.stdout)


def submit_indices(batch: Batch, model: ModelEntry, script: str, indices: Sequence[int],
                   runner: Runner = run_command, throttle: int | None = None,
                   max_size: int | None = None) -> list[Job]:
    """Submit some indices of one model, split under MaxArraySize; return the jobs."""
    if not available() and runner is run_command:
        raise SchedulerError("SLURM's sbatch is not on PATH: run on a cluster login node, "
                             "or use --executor local")
    limit = max_size or max_array_size(runner)
    jobs: list[Job] = []
    for offset, local in split_array(indices, limit):
        array = format_indices(local)
        if throttle:
            array += f"%{throttle}"
        job_id = sbatch(script, array, offset, runner)
        jobs.append(Job(job_id=job_id, indices=format_indices([i + offset for i in local]),
                        executor="slurm", submitted=now_iso(), offset=offset))
    return jobs


def submit_batch(batch: Batch, models: list[ModelEntry], tasks: list[int] | None,
                 say: Callable[[str], None] = print, runner: Runner = run_command,
                 only_failed: bool = False) -> list[Job]:
    """Submit the selected tasks of each model and record the job ids in batch.yaml."""
    from netrain.dispatch import pending_indices, select_indices

    throttle = batch.manifest.slurm.get("max_running")
    all_jobs: list[Job] = []
    for model in models:
        indices = select_indices(model, tasks)
        if tasks is None and not only_failed:
            indices = pending_indices(batch, model, indices)
        if not indices:
            say(f"{model.key}: nothing to submit")
            continue
        jobs = submit_indices(batch, model, str(batch.script_path(model)), indices, runner,
                              throttle)
        with batch.locked() as b:
            b.manifest.model(model.key).jobs.extend(jobs)
            b.save()
        for j in jobs:
            say(f"{model.key}: submitted array job {j.job_id} (tasks {j.indices})")
        all_jobs.extend(jobs)
    return all_jobs


def job_ids_of(batch: Batch) -> dict[str, tuple[str, int]]:
    """{slurm job id: (model key, index offset)} for every SLURM job of the batch."""
    out: dict[str, tuple[str, int]] = {}
    for m in batch.manifest.models:
        for j in m.jobs:
            if j.executor == "slurm":
                out[j.job_id] = (m.key, j.offset)
    out.update(parse_runbatch_jobs(batch))
    return out


def parse_runbatch_jobs(batch: Batch) -> dict[str, tuple[str, int]]:
    """Jobs submitted by hand with runbatch.sh (records/runbatch-jobs.txt: "model job")."""
    try:
        text = (batch.path / "records" / "runbatch-jobs.txt").read_text(encoding="utf-8")
    except OSError:
        return {}
    keys = {m.key for m in batch.manifest.models}
    out: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in keys and parts[1].isdigit():
            out[parts[1]] = (parts[0], 0)
    return out


def scheduler_view(batches: list[Batch], runner: Runner = run_command
                   ) -> tuple[dict[str, dict[str, dict[int, tuple[str, str]]]], str]:
    """One squeue and one sacct call for all jobs of all batches.

    Returns ({batch id: {model key: {index: (job id, SLURM state)}}}, a note or "").
    """
    owners: dict[str, tuple[str, str, int]] = {}
    for b in batches:
        for job, (key, off) in job_ids_of(b).items():
            owners[job] = (b.id, key, off)
    if not owners:
        return {}, ""
    if runner is run_command and not available():
        return {}, "note: SLURM is not reachable from here: states come from the tasks' records"
    ids = ",".join(sorted(owners, key=int))
    states: dict[str, dict[int, str]] = {}
    note = ""
    acct = runner(["sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,State"])
    if acct.returncode == 0:
        states = parse_job_states(acct.stdout)
    else:
        err = (acct.stderr or "").strip().splitlines()
        note = ("note: sacct is not available (" + (err[-1] if err else "no accounting") +
                "): finished tasks are judged by their own records")
    queue = runner(["squeue", "-h", "-r", "-j", ids, "-o", "%i|%T"])
    if queue.returncode == 0:
        for job, tasks in parse_job_states(queue.stdout).items():
            states.setdefault(job, {}).update(tasks)
    out: dict[str, dict[str, dict[int, tuple[str, str]]]] = {}
    for job in sorted(states, key=lambda j: int(j) if j.isdigit() else 0):
        if job not in owners:
            continue
        bid, key, off = owners[job]
        dest = out.setdefault(bid, {}).setdefault(key, {})
        for t, state in states[job].items():
            if t >= 0:
                dest[t + off] = (job, state)  # a later job of the same index wins
    return out, note


def cancel(job_ids: Sequence[str], runner: Runner = run_command) -> None:
    if not job_ids:
        return
    r = runner(["scancel", *job_ids])
    if r.returncode != 0:
        raise SchedulerError(f"scancel failed: {(r.stderr or r.stdout).strip()}")


def job_record(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, "indices": job.indices, "offset": job.offset}
