"""Talking to SLURM: the only module that runs sbatch, squeue, sacct, scancel and scontrol.

Pure parsers (``parse_*``) work on text; the few functions that call out take a ``runner``
so tests can feed recorded output to the parsers. Argument lists, never a shell. It knows
nothing of batches: the executor records what it submits.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from netrain import env as names
from netrain.define.spec import format_indices
from netrain.errors import SchedulerError

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
           extra: Sequence[str] = (), env: Mapping[str, str] | None = None) -> str:
    exports = ",".join([f"{names.INDEX_OFFSET}={offset}",
                        *(f"{k}={v}" for k, v in (env or {}).items())])
    argv = ["sbatch", "--parsable", f"--array={array}", f"--export=ALL,{exports}", *extra,
            script]
    r = runner(argv)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise SchedulerError(f"sbatch refused {script}: {msg[-1] if msg else 'no message'}")
    return parse_job_id(r.stdout)


def submit_after(job_ids: Sequence[str], options: Sequence[str], command: str,
                 runner: Runner | None = None) -> str:
    """sbatch a one-line job that starts once every job of ``job_ids`` has ended, however
    it ended (afterany), and no job of its name runs (singleton: one sync job of a batch at
    a time, one writer); returns its id."""
    argv = ["sbatch", "--parsable", f"--dependency=afterany:{':'.join(job_ids)},singleton",
            "--kill-on-invalid-dep=no", *options, f"--wrap={command}"]
    r = (runner or run_command)(argv)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise SchedulerError(f"sbatch refused the sync job: {msg[-1] if msg else 'no message'}")
    return parse_job_id(r.stdout)


def sync_job_running(batch_id: str, runner: Runner | None = None) -> bool:
    """Whether the batch's sync job (``sync-<batch id>``) is running now: then it is the
    batch's one writer, and `netrain sync --follow` waits for it."""
    if runner is None:
        if not available():
            return False
        runner = run_command
    r = runner(["squeue", "-h", "-n", f"sync-{batch_id}", "-t", "RUNNING", "-o", "%i"])
    return r.returncode == 0 and bool(r.stdout.strip())


@dataclass(frozen=True)
class Submitted:
    """One array job sbatch accepted: its id, the index offset, the batch indices it holds."""

    job_id: str
    offset: int
    indices: list[int]


def submit_array(script: str, indices: Sequence[int], *, throttle: int | None = None,
                 runner: Runner | None = None, max_size: int | None = None,
                 env: Mapping[str, str] | None = None) -> list[Submitted]:
    """sbatch ``script`` for these indices, split under MaxArraySize (one job per chunk)."""
    if runner is None:
        if not available():
            raise SchedulerError("SLURM's sbatch is not on PATH: run on a cluster login node, "
                                 "or use --executor local")
        runner = run_command
    limit = max_size or max_array_size(runner)
    out: list[Submitted] = []
    for offset, local in split_array(indices, limit):
        array = format_indices(local)
        if throttle:
            array += f"%{throttle}"
        job_id = sbatch(script, array, offset, runner, env=env)
        out.append(Submitted(job_id, offset, [i + offset for i in local]))
    return out


def job_states(job_ids: Sequence[str], runner: Runner | None = None
               ) -> tuple[dict[str, dict[int, str]], str]:
    """One sacct and one squeue call: ({job id: {array task: STATE}}, a note or "").

    squeue's answer (the live one) wins over sacct's for a task both list.
    """
    if not job_ids:
        return {}, ""
    if runner is None:
        if not available():
            return {}, ("note: SLURM is not reachable from here: states come from the tasks' "
                        "records")
        runner = run_command
    ids = ",".join(sorted(set(job_ids), key=lambda j: int(j) if j.isdigit() else 0))
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
    return states, note


def cancel(job_ids: Sequence[str], runner: Runner | None = None) -> None:
    if not job_ids:
        return
    r = (runner or run_command)(["scancel", *job_ids])
    if r.returncode != 0:
        raise SchedulerError(f"scancel failed: {(r.stderr or r.stdout).strip()}")


# ------------------------------------------------------------------------ netrain check

def test_only(script: str, runner: Runner = run_command) -> str:
    """``sbatch --test-only SCRIPT``: what the controller says of the script's options, ""
    when it would take the job (nothing is submitted)."""
    r = runner(["sbatch", "--test-only", script])
    if r.returncode == 0:
        return ""
    lines = [x.strip() for x in (r.stderr + "\n" + r.stdout).splitlines() if x.strip()]
    # sbatch prints its own "sbatch: error: ..." and the controller's "allocation failure"
    said = [x for x in lines if "error" in x.lower() or "failure" in x.lower()] or lines
    return "; ".join(dict.fromkeys(said)) or f"sbatch --test-only exited {r.returncode}"


def run_step(options: Sequence[str], argv: Sequence[str], name: str, timeout: float,
             env: Mapping[str, str]) -> Result:
    """Run ``argv`` once on a compute node as its own short job (srun), its output streamed
    back by SLURM (so it needs no shared filesystem); on timeout the job is cancelled and the
    result's stderr says why it had not ended (squeue's reason)."""
    full = ["srun", f"--job-name={name}", "--nodes=1", "--ntasks=1", *options, *argv]
    try:
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=dict(env),
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Result(127, "", "srun: command not found")
    except KeyboardInterrupt:
        run_command(["scancel", "-n", name])  # srun alone needs a second Ctrl-C to let go
        raise
    except subprocess.TimeoutExpired:
        q = run_command(["squeue", "-h", "-n", name, "-o", "%T|%r"])
        state = q.stdout.strip().splitlines()[0] if q.stdout.strip() else "ended"
        run_command(["scancel", "-n", name])
        return Result(124, "", f"no answer within {timeout:.0f} s (job {name}: {state})")
    return Result(p.returncode, p.stdout, p.stderr)
