"""Helpers of the SLURM tests: submit a batch, wait for its jobs to leave the queue, read
what `show` and the manifest say about it (shared by test_slurm and test_requeue)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import invoke

#: The longest a test waits for the cluster to run a batch's jobs (seconds).
TIMEOUT = 420


def tracking_uri(proj: Path) -> str:
    """The tracking URI of a project made by tests.conftest.make_userproj."""
    return f"sqlite:///{proj / 'tracking' / 'custom.db'}"


def batch_jobs(batch: Path) -> list[dict]:
    """The batch's submitted jobs, as its manifest records them."""
    m = yaml.safe_load((batch / "batch.yaml").read_text())
    return [j for mm in m["models"] for j in mm["jobs"]]


def wait_jobs(batch: Path, timeout: float = TIMEOUT) -> None:
    """Wait until SLURM holds no job of the batch any more: its arrays and its sync job."""
    ids = ",".join(j["job_id"] for j in batch_jobs(batch))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", ids, "-o", "%i"], capture_output=True,
                           text=True)
        sync = subprocess.run(["squeue", "-h", "-n", f"sync-{batch.name}", "-o", "%i"],
                              capture_output=True, text=True)
        if q.returncode == 0 and not q.stdout.strip() and not sync.stdout.strip():
            time.sleep(1.5)  # accounting lags squeue by about a second
            return
        time.sleep(1)
    subprocess.run(["scancel", *ids.split(",")])
    pytest.fail(f"batch {batch.name} did not finish within {timeout} s")


def wait_ids(ids: list[str], timeout: float = TIMEOUT) -> None:
    """Wait until SLURM holds none of these jobs (cancelled, with a failure, at the timeout)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"],
                         capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", *ids])
            pytest.fail(f"jobs {ids} did not finish within {timeout} s")
        time.sleep(1)
    time.sleep(1.5)  # accounting lags squeue


def show_json(proj: Path, batch: Path, env: dict | None = None) -> dict:
    r = invoke("show", batch.name, "--json", cwd=proj, env=env)
    assert r.code == 0, r.text
    return json.loads(r.out)


def states(data: dict) -> list[list[str]]:
    """Each model's task states, from `show --json`."""
    return [[t["state"] for t in m["tasks"]] for m in data["models"]]


def generate(proj: Path, *args: str, env: dict | None = None) -> Path:
    """`netrain generate ... --executor slurm --run`: the new batch, its arrays submitted."""
    r = invoke("generate", *args, "--executor", "slurm", "--run", cwd=proj, env=env)
    assert r.code == 0, r.text
    return Path(r.out.strip().splitlines()[0])
