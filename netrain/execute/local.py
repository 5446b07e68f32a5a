"""Processes on this machine: a batch's sbatch scripts run exactly as SLURM would (same
script, the array index in SLURM_ARRAY_TASK_ID), N at a time, for the executor; and the
child process that checks the configuration function for generate and add."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from netrain import env as names

_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME",
               "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
               "SLURM_JOBID", "SLURM_RESTART_COUNT")


#: Seconds a stopped task gets to write its checkpoint and close its runs before SIGKILL.
STOP_GRACE = 30.0


@dataclass(frozen=True)
class LocalTask:
    model_key: str
    index: int
    script: Path
    log: Path
    record: Path
    #: Extra environment variables (a retrain's record key).
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class TaskOutcome:
    task: LocalTask
    returncode: int
    seconds: float


def task_environment(task: LocalTask) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SLURM_VARS}
    env.update({
        "SLURM_ARRAY_TASK_ID": str(task.index),
        names.INDEX_OFFSET: "0",
        names.EXECUTOR: "local",
        names.LOG: str(task.log),
        **dict(task.env),
    })
    return env


def run_tasks(tasks: list[LocalTask], workers: int,
              progress: Callable[[TaskOutcome, int, int], None] | None = None,
              cwd: Path | None = None,
              on_exit: Callable[[LocalTask, int], object] | None = None) -> list[TaskOutcome]:
    """Run the tasks, ``workers`` at a time; Ctrl-C stops them all (their runs end KILLED).
    ``on_exit(task, returncode)`` is called as each process ends (the executor heals there)."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    lock = threading.Lock()
    stopping = threading.Event()
    done: list[TaskOutcome] = []

    def one(task: LocalTask) -> TaskOutcome:
        if stopping.is_set():
            return TaskOutcome(task, -signal.SIGINT, 0.0)
        task.log.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(task.log, "ab") as log:
            proc = subprocess.Popen(["bash", str(task.script)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=task_environment(task), cwd=str(cwd or task.script.parent),
                                    start_new_session=True)
            with lock:
                procs[proc.pid] = proc
            rc = proc.wait()
            with lock:
                procs.pop(proc.pid, None)
        if on_exit is not None:
            on_exit(task, rc)
        outcome = TaskOutcome(task, rc, time.monotonic() - start)
        with lock:
            done.append(outcome)
            if progress is not None:
                progress(outcome, len(done), len(tasks))
        return outcome

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures = [pool.submit(one, t) for t in tasks]
    try:
        results = [f.result() for f in futures]
    except BaseException:
        # Ctrl-C, or an error here (a record that cannot be written, a bug): the running
        # tasks are stopped as SLURM stops them (SIGTERM: each checkpoints, its runs wait
        # resumable), the others never start, and no worker is left to keep this process
        # alive (netrain.exits).
        stopping.set()
        for f in futures:
            f.cancel()
        with lock:
            running = list(procs.values())
        for p in running:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in running:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def python_executable() -> str:
    return sys.executable
