"""Preemption on a real SLURM cluster: SLURM's time-limit warning (USR1) makes a task
checkpoint, requeue itself and resume in the same runs; a task killed with SIGKILL and
resubmitted resumes from its last checkpoint. One MLflow run per network, contiguous steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import invoke, make_userproj, mlflow_client, run_cli
from tests.slurm.batches import batch_jobs, generate, tracking_uri, wait_jobs


def _steps(batch: Path, key: str) -> list[int]:
    path = batch / "journal" / "regressor-wide" / "0.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("ev") == "metrics" and ev.get("key") == key:
            out.append(ev["step"])
    return out


def _wait_epochs(batch: Path, key: str, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_steps(batch, key)) >= n:
            return
        time.sleep(0.5)
    pytest.fail(f"{key} never trained {n} epochs")


def _one_run_per_network(proj: Path, batch: Path, epochs: int) -> None:
    r = invoke("sync", batch.name, cwd=proj)
    assert r.code == 0, r.text
    c = mlflow_client(tracking_uri(proj))
    exp = c.get_experiment_by_name(batch.name)
    runs = c.search_runs([exp.experiment_id])
    nets = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(nets) == 1 and len(runs) == 2, [r.info.run_name for r in runs]
    assert {r.info.status for r in runs} == {"FINISHED"}
    history = c.get_metric_history(nets[0].info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(epochs))


def test_time_limit_warning_checkpoints_requeues_and_finishes(proj: Path) -> None:
    batch = generate(proj, "--models", "regressor.wide=1", "--array", "1", "--nb-epoch", "40",
                     "--epoch-samples", "64", "--no-check", env={"USERPROJ_SLEEP": "0.15"})
    _wait_epochs(batch, "regressor-wide/0/n0", 5)
    job = batch_jobs(batch)[0]["job_id"]
    # what SLURM sends the batch shell before the time limit (--signal=B:USR1@...)
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_0"], check=True)
    wait_jobs(batch, timeout=300)
    log = next(p for p in (batch / "logs").glob("*.log")
               if not p.name.startswith("sync_")).read_text()
    assert "requeueing SLURM job" in log and "resuming from its checkpoint at epoch" in log
    rec = json.loads((batch / "records" / "regressor-wide" / "0.json").read_text())
    assert rec["state"] == "finished" and rec["attempt"] == 2
    assert _steps(batch, "regressor-wide/0/n0") == list(range(40))
    _one_run_per_network(proj, batch, 40)


def test_sigkill_then_resubmit_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    proj = make_userproj(tmp_path / "p", "executor: slurm\ncheckpoint:\n  every_epochs: 1\n")
    batch = generate(proj, "--models", "regressor.wide=1", "--array", "1", "--nb-epoch", "40",
                     "--epoch-samples", "64", "--no-check", env={"USERPROJ_SLEEP": "0.15"})
    _wait_epochs(batch, "regressor-wide/0/n0", 6)
    rec = json.loads((batch / "records" / "regressor-wide" / "0.json").read_text())
    os.kill(rec["pid"], signal.SIGKILL)  # the training process dies without a word
    wait_jobs(batch)
    before = len(_steps(batch, "regressor-wide/0/n0"))
    r = run_cli("resubmit", batch.name, "--failed", cwd=proj)
    assert r.code == 0, r.text
    wait_jobs(batch)
    log = "".join(p.read_text() for p in (batch / "logs").glob("*.log"))
    resumed = int(log.split("resuming from its checkpoint at epoch ")[1].split()[0])
    assert before - resumed <= 1  # lost at most one checkpoint interval
    assert _steps(batch, "regressor-wide/0/n0") == list(range(40))
    _one_run_per_network(proj, batch, 40)
