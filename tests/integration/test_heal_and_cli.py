"""Pieces that need real MLflow but no SLURM: closing the runs of a task SLURM saw die,
--dry-run, and the promise that `netrain --help` imports neither TensorFlow nor MLflow.
The CLI runs in this process (CliRunner); the import check needs a fresh interpreter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netrain.define.batch import Batch
from netrain.execute.heal import heal
from netrain.execute.records import NetRecord, TaskRecord, read_record, record_path, write_record
from netrain.execute.status import State, batch_status
from tests.conftest import invoke, mlflow_client, snapshot_tree


def test_help_and_import_stay_light() -> None:
    code = ("import sys, netrain, netrain.cli; "
            "from click.testing import CliRunner; "
            "r = CliRunner().invoke(netrain.cli.cli, ['--help']); assert r.exit_code == 0; "
            "print([m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_dry_run_writes_nothing(userproj: Path) -> None:
    before = snapshot_tree(userproj)
    r = invoke("generate", "--models", "regressor.narrow=2", "--array", "3", "--dry-run",
                "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    assert "would create batch" in r.err and "regressor-narrow-sbatch.sh" in r.err
    assert "#SBATCH --array=0-2" in r.err
    assert snapshot_tree(userproj) == before


def test_show_closes_runs_of_a_task_slurm_saw_die(userproj: Path) -> None:
    r = invoke("generate", "--models", "regressor.narrow=2", "--array", "1", "--no-check",
                cwd=userproj)
    assert r.code == 0, r.text
    batch = Batch.load(Path(r.out.strip().splitlines()[-1]))
    uri = batch.manifest.tracking["uri"]
    c = mlflow_client(uri)
    exp = batch.manifest.tracking["experiment_id"]
    parent = c.create_run(exp, tags={"batch": batch.id}).info.run_id
    child = c.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    done = c.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    c.set_terminated(done, "FINISHED")
    path = record_path(batch.path, "regressor-narrow", 0)
    write_record(path, TaskRecord(
        model="regressor.narrow", index=0, state="running", slurm_job_id="77_0",
        parent_run_id=parent, nets={"0": NetRecord(state="finished", run_id=done),
                                    "1": NetRecord(state="running", run_id=child)}))
    # what one sacct call would report: the task hit its time limit (SIGKILL, no handler ran)
    status = batch_status(batch, {"regressor.narrow": {0: ("77", "TIMEOUT")}})
    assert status.models[0].tasks[0].state is State.TIMEOUT
    assert heal(batch, status) == 1
    assert c.get_run(parent).info.status == "FAILED"
    assert c.get_run(child).info.status == "FAILED"
    assert c.get_run(done).info.status == "FINISHED"
    rec = read_record(path)
    assert rec is not None and rec.state == "died" and "TIMEOUT" in rec.error
    assert rec.nets["1"].state == "failed" and rec.nets["0"].state == "finished"
    assert heal(batch, batch_status(batch, {"regressor.narrow": {0: ("77", "TIMEOUT")}})) == 0
    r = invoke("show", batch.id, "--json", "--no-scheduler", cwd=userproj)
    assert json.loads(r.out)["models"][0]["tasks"][0]["state"] == "died"


def test_heal_waits_for_tracking_before_marking_died(userproj: Path) -> None:
    """Tracking down: the record stays running (nothing written) and the next show heals."""
    batch, path, parent = _running_task(userproj, executor="slurm", slurm_job_id="78_0")
    c = mlflow_client(batch.manifest.tracking["uri"])
    before = path.read_bytes()
    view = {"regressor.narrow": {0: ("78", "CANCELLED")}}
    assert heal(batch, batch_status(batch, view), close=down) == 0
    assert path.read_bytes() == before
    assert c.get_run(parent).info.status == "RUNNING"
    assert heal(batch, batch_status(batch, view)) == 1
    assert c.get_run(parent).info.status == "KILLED"
    rec = read_record(path)
    assert rec is not None and rec.state == "died"


def test_mlflow_store_errors_are_typed(userproj: Path) -> None:
    """Recognised by MLflow's error code, not by the words of its message."""
    from netrain.errors import RunNotFound, TrackingUnavailable
    from netrain.track import mlflow_store

    uri = f"sqlite:///{userproj / 'tracking' / 'custom.db'}"
    c = mlflow_client(uri)
    exp = c.create_experiment("typed-errors")
    run = c.create_run(exp, tags={"batch": "x"}).info.run_id
    info = mlflow_store.get_run(uri, run)
    assert (info.run_id, info.status, info.tags["batch"]) == (run, "RUNNING", "x")
    missing = "f" * 32
    with pytest.raises(RunNotFound, match=missing):
        mlflow_store.get_run(uri, missing)
    assert mlflow_store.close_runs(uri, [missing, run], "FAILED") == 1
    assert mlflow_store.experiment_tag(uri, "987654", "netrain.batch_dir") is None
    # the backend that may hold it is down: that wins over "not found" in the other
    with pytest.raises(TrackingUnavailable, match=r"127\.0\.0\.1:9"):
        mlflow_store.find_run([uri, "http://127.0.0.1:9"], missing)


def down(uri: str, run_ids: list[str], status: str) -> int:
    """A closer for a tracking backend that is down."""
    from netrain.errors import TrackingUnavailable

    raise TrackingUnavailable("tracking server is unreachable")


def _running_task(userproj: Path, **fields: object) -> tuple[Batch, Path, str]:
    """A batch with one task whose record says running, and its parent run (RUNNING)."""
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "1", "--no-check",
               cwd=userproj)
    assert r.code == 0, r.text
    batch = Batch.load(Path(r.out.strip().splitlines()[-1]))
    c = mlflow_client(batch.manifest.tracking["uri"])
    parent = c.create_run(batch.manifest.tracking["experiment_id"]).info.run_id
    path = record_path(batch.path, "regressor-narrow", 0)
    write_record(path, TaskRecord(model="regressor.narrow", index=0, state="running",
                                  parent_run_id=parent, **fields))  # type: ignore[arg-type]
    return batch, path, parent


def here(pid: int) -> dict[str, object]:
    return {"executor": "local", "host": socket.gethostname(), "pid": pid}


def test_a_local_task_that_exited_is_closed_then_marked_died(userproj: Path) -> None:
    from netrain.execute.heal import heal_exited

    batch, path, parent = _running_task(userproj, **here(os.getpid()))
    c = mlflow_client(batch.manifest.tracking["uri"])
    assert not heal_exited(batch, path, -9, close=down)
    assert read_record(path).state == "running"  # type: ignore[union-attr]
    assert not heal_exited(batch, path, 0)
    assert heal_exited(batch, path, -9)
    assert c.get_run(parent).info.status == "KILLED"
    rec = read_record(path)
    assert rec is not None and rec.state == "died" and "code -9" in rec.error


def test_show_heals_a_local_task_whose_process_is_gone(userproj: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    batch, _, parent = _running_task(userproj, **here(gone.pid))
    c = mlflow_client(batch.manifest.tracking["uri"])
    r = invoke("show", batch.id, "--json", "--no-scheduler", cwd=userproj)
    assert r.code == 0, r.text
    task = json.loads(r.out)["models"][0]["tasks"][0]
    assert task["state"] == "died" and "process is gone" in task["error"]
    assert c.get_run(parent).info.status == "FAILED"
    # a task whose process is alive (this one) is left alone
    batch2, _, parent2 = _running_task(userproj, **here(os.getpid()))
    r = invoke("show", batch2.id, "--json", "--no-scheduler", cwd=userproj)
    assert json.loads(r.out)["models"][0]["tasks"][0]["state"] == "running"
    assert c.get_run(parent2).info.status == "RUNNING"


def test_pack_is_recorded_per_segment_and_reaches_the_script(userproj: Path) -> None:
    r = invoke("generate", "--models", "regressor.narrow=2", "--array", "1", "--no-check",
                "--pack", cwd=userproj)
    assert r.code == 0, r.text
    path = Path(r.out.strip().splitlines()[-1])
    r = invoke("add", str(path), "--models", "regressor.narrow=3", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    [model] = Batch.load(path).manifest.models
    assert [s.pack for s in model.segments] == [True, False]
    script = (path / "scripts" / "regressor-narrow-sbatch.sh").read_text()
    assert "intelligent=false; pack=true" in script and "intelligent=false; pack=false" in script
    assert 'pack="$pack"' in script or '--pack "$pack"' in script
