"""A configuration written by someone else, driven through netrain.yaml: other names, other
paths, the direct launcher; failures and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import invoke, mlflow_client, run_cli, wait_until_training

pytestmark = pytest.mark.slow


def _uri(proj: Path) -> str:
    return f"sqlite:///{proj / 'tracking' / 'custom.db'}"


def test_generate_run_local_with_custom_config(userproj: Path) -> None:
    r = invoke("generate", "--models", "regressor.narrow=2, wide=1", "--array", "2",
                "--nb-epoch", "2", "--epoch-samples", "256", "--executor", "local", "--run",
                cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[0])
    assert batch.parent == userproj / "runs"
    c = mlflow_client(_uri(userproj))
    exp = c.get_experiment_by_name(batch.name)
    runs = c.search_runs([exp.experiment_id], "tags.net_index != ''", max_results=100)
    assert len(runs) == 6
    assert {r.data.tags["architecture"] for r in runs} == {"narrow", "wide"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.params["width"] for r in runs} == {"4", "16"}


def test_failing_index_is_reported_and_resubmitted(userproj: Path, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    env = {"USERPROJ_FAIL_INDEX": "1", "USERPROJ_FIXED_MARKER": str(marker)}
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "3", "--nb-epoch", "1",
                "--epoch-samples", "128", "--no-check", cwd=userproj, env=env)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    r = run_cli("run", batch.name, cwd=userproj, env=env)
    assert r.code == 1 and "2 ok, 1 failed" in r.err, r.text
    r = invoke("show", batch.name, "--json", cwd=userproj)
    tasks = json.loads(r.out)["models"][0]["tasks"]
    assert [t["state"] for t in tasks] == ["finished", "failed", "finished"]
    assert tasks[1]["log"].endswith("regressor-narrow_local_1.log")
    assert "deliberate failure" in Path(tasks[1]["log"]).read_text()
    r = invoke("show", batch.name, cwd=userproj)
    assert "failed" in r.out and "regressor-narrow_local_1.log" in r.out
    marker.write_text("fixed")
    r = run_cli("resubmit", batch.name, "--failed", cwd=userproj, env=env)
    assert r.code == 0, r.text
    r = invoke("show", batch.name, "--json", cwd=userproj)
    assert [t["state"] for t in json.loads(r.out)["models"][0]["tasks"]] == ["finished"] * 3


def test_sigterm_leaves_runs_resumable_never_running(userproj: Path) -> None:
    r = invoke("generate", "--models", "regressor.wide=1", "--array", "1", "--nb-epoch", "500",
                "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local",
               USERPROJ_SLEEP="0.05", NETRAIN_LOG=str(batch / "logs" / "sig.log"))
    proc = subprocess.Popen(["bash", str(batch / "scripts" / "regressor-wide-sbatch.sh")],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    record = batch / "records" / "regressor-wide" / "0.json"
    if not wait_until_training(record, 120):
        proc.kill()
        pytest.fail("the task never started training")
    time.sleep(2)
    os.kill(proc.pid, signal.SIGTERM)  # what SLURM does to the batch shell on scancel
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    rec = json.loads(record.read_text())
    assert rec["state"] == "killed" and rec["nets"]["0"]["state"] == "interrupted"
    r = invoke("sync", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    c = mlflow_client(_uri(userproj))
    exp = c.get_experiment_by_name(batch.name)
    runs = c.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"}
    assert {r.data.tags.get("netrain.state") for r in runs} == {"resumable"}
    r = invoke("show", batch.name, "--json", cwd=userproj)
    task = json.loads(r.out)["models"][0]["tasks"][0]
    assert task["state"] == "resumable" and task["resume_epoch"] >= 1
