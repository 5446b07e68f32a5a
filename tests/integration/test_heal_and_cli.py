"""Pieces that need real MLflow but no SLURM: closing the runs of a task SLURM saw die,
--dry-run, and the promise that `netrain --help` imports neither TensorFlow nor MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from netrain.batch import Batch
from netrain.reconcile import heal
from netrain.records import NetRecord, TaskRecord, read_record, record_path, write_record
from netrain.status import State, batch_status
from tests.conftest import mlflow_client, run_cli, snapshot_tree


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
    r = run_cli("generate", "--models", "regressor.narrow=2", "--array", "3", "--dry-run",
                "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    assert "would create batch" in r.err and "regressor-narrow-sbatch.sh" in r.err
    assert "#SBATCH --array=0-2" in r.err
    assert snapshot_tree(userproj) == before


def test_show_closes_runs_of_a_task_slurm_saw_die(userproj: Path) -> None:
    r = run_cli("generate", "--models", "regressor.narrow=2", "--array", "1", "--no-check",
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
    r = run_cli("show", batch.id, "--json", "--no-scheduler", cwd=userproj)
    assert json.loads(r.out)["models"][0]["tasks"][0]["state"] == "died"


def test_pack_is_recorded_per_segment_and_reaches_the_script(userproj: Path) -> None:
    r = run_cli("generate", "--models", "regressor.narrow=2", "--array", "1", "--no-check",
                "--pack", cwd=userproj)
    assert r.code == 0, r.text
    path = Path(r.out.strip().splitlines()[-1])
    r = run_cli("add", str(path), "--models", "regressor.narrow=3", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    [model] = Batch.load(path).manifest.models
    assert [s.pack for s in model.segments] == [True, False]
    script = (path / "scripts" / "regressor-narrow-sbatch.sh").read_text()
    assert "intelligent=false; pack=true" in script and "intelligent=false; pack=false" in script
    assert 'pack="$pack"' in script or '--pack "$pack"' in script
