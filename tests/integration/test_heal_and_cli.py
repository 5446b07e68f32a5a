"""Pieces that need real MLflow but no SLURM: closing the runs of a task SLURM saw die or
whose process is gone, --dry-run, and the promise that `netrain --help` imports neither
TensorFlow nor MLflow. The dead tasks are real: a task process started by its batch script,
killed with SIGKILL mid-training, leaving its record and journal as it wrote them. The CLI
runs in this process (CliRunner); the import check needs a fresh interpreter."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from netrain.define.batch import Batch
from netrain.execute.heal import heal
from netrain.execute.records import TaskRecord, read_record, record_path, write_record
from netrain.execute.status import State, batch_status
from netrain.track.journal import read_state
from tests.conftest import invoke, make_userproj, mlflow_client, snapshot_tree


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


def test_heal_closes_the_runs_of_a_task_slurm_saw_die(tmp_path: Path) -> None:
    proj = make_userproj(tmp_path / "p", NO_CHECKPOINTS)
    batch, path = _generate(proj, nets=2)
    with task_process(batch, SLURM_JOB_ID="77", SLURM_ARRAY_JOB_ID="77",
                      USERPROJ_SLEEP_NET="1") as task:
        rec = wait_for(path, lambda r: net_states(r) == {"0": "finished", "1": "running"})
        assert (rec.executor, rec.slurm_job_id) == ("slurm", "77_0")
        kill(task, rec)  # SLURM's time limit: SIGKILL, no handler ran
    # what one sacct call would report
    view = {"regressor.narrow": {0: ("77", "TIMEOUT")}}
    status = batch_status(batch, view)
    assert status.models[0].tasks[0].state is State.TIMEOUT
    assert heal(batch, status) == 1
    assert run_states(batch) == {"regressor-narrow/0": "KILLED",
                                 "regressor-narrow/0/n0": "FINISHED",
                                 "regressor-narrow/0/n1": "FAILED"}
    rec = read_record(path)
    assert rec is not None and rec.state == "died" and "TIMEOUT" in rec.error
    assert net_states(rec) == {"0": "finished", "1": "lost"}
    assert heal(batch, batch_status(batch, view)) == 0
    r = invoke("show", batch.id, "--json", "--no-scheduler", cwd=proj)
    shown = json.loads(r.out)["models"][0]["tasks"][0]
    assert shown["state"] == "lost" and "TIMEOUT" in shown["error"]  # died, network lost


def test_a_record_from_before_the_journal_waits_for_tracking(userproj: Path) -> None:
    """A record that netrain wrote before tasks had a journal (00b9eae; batches of that time
    are still on disk) names no journal: heal closes its runs in MLflow itself. Tracking
    down: the record stays running (nothing written) and the next show heals."""
    batch, path, parent = _record_without_journal(userproj)
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


def _record_without_journal(userproj: Path) -> tuple[Batch, Path, str]:
    """A batch with one task as netrain wrote it before the journal: its record (running,
    on SLURM) written by the record writer the task used then, and its run opened in
    MLflow directly, as the task then did (RUNNING)."""
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "1", "--no-check",
               cwd=userproj)
    assert r.code == 0, r.text
    batch = Batch.load(Path(r.out.strip().splitlines()[-1]))
    c = mlflow_client(batch.manifest.tracking["uri"])
    parent = c.create_run(batch.manifest.tracking["experiment_id"]).info.run_id
    path = record_path(batch.path, "regressor-narrow", 0)
    write_record(path, TaskRecord(model="regressor.narrow", index=0, state="running",
                                  parent_run_id=parent, executor="slurm",
                                  slurm_job_id="78_0"))
    return batch, path, parent


def test_show_heals_a_local_task_whose_process_is_gone(userproj: Path) -> None:
    """(A local task's exit seen by `netrain run` itself: test_resume kills one there.)"""
    from netrain.execute.heal import heal_exited

    batch, path = _generate(userproj, nets=1)
    journal = batch.path / "journal" / "regressor-narrow" / "0.jsonl"
    # killed while the user's configuration function runs: its run is open, no network yet
    with task_process(batch, NETRAIN_EXECUTOR="local", USERPROJ_CONFIG_SLEEP="600") as task:
        rec = wait_for(path, lambda r: r.state == "running" and journal.is_file()
                       and b'"ev":"run"' in journal.read_bytes())
        # a task whose process is alive, holding the task's lock, is left alone
        assert not heal_exited(batch, path, -9)
        r = invoke("show", batch.id, "--json", "--no-scheduler", cwd=userproj)
        assert r.code == 0, r.text
        assert json.loads(r.out)["models"][0]["tasks"][0]["state"] == "running"
        assert read_record(path) == rec
        kill(task, rec)
    assert not heal_exited(batch, path, 0)  # a clean exit is not a death
    r = invoke("show", batch.id, "--json", "--no-scheduler", cwd=userproj)
    assert r.code == 0, r.text
    shown = json.loads(r.out)["models"][0]["tasks"][0]
    assert shown["state"] == "died" and "process is gone" in shown["error"]
    assert run_states(batch) == {"regressor-narrow/0": "KILLED"}
    after = read_record(path)
    assert after is not None and after.state == "died" and after.nets == {}


NO_CHECKPOINTS = "checkpoint:\n  enabled: false\n"  # a killed network is lost, not resumable


def _generate(userproj: Path, nets: int) -> tuple[Batch, Path]:
    """A batch of one task of ``nets`` networks; the path of the task's record."""
    r = invoke("generate", "--models", f"regressor.narrow={nets}", "--array", "1",
               "--nb-epoch", "2", "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    batch = Batch.load(Path(r.out.strip().splitlines()[-1]))
    return batch, record_path(batch.path, "regressor-narrow", 0)


@contextmanager
def task_process(batch: Batch, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """Array task 0, started by its batch script as SLURM or the local executor starts it
    (``env``: their variables, and the user's script's knobs). Its networks sleep 600 s
    after each epoch (only network USERPROJ_SLEEP_NET, if given), so it is still training
    when the test kills it."""
    [script] = (batch.path / "scripts").glob("*-sbatch.sh")
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update({"SLURM_ARRAY_TASK_ID": "0", "USERPROJ_SLEEP": "600",
                 # as netrain run (and a batch with a sync job) start tasks: the journal is
                 # shipped after the task, here by heal
                 "NETRAIN_SHIP_LATER": "1", "NETRAIN_SHIP_AFTER": "600", **env})
    log = batch.path / "logs" / "test-task.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(["bash", str(script)], env=full, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def wait_for(path: Path, ready: Callable[[TaskRecord], bool],
             timeout: float = 300) -> TaskRecord:
    """The task's record once ``ready`` says so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = read_record(path)
        if rec is not None and ready(rec):
            return rec
        time.sleep(0.2)
    log = path.parents[2] / "logs" / "test-task.log"
    pytest.fail(f"the task never reached the state waited for; record {read_record(path)}; "
                f"log:\n{log.read_text()[-3000:] if log.exists() else ''}")


def kill(task: subprocess.Popen[bytes], rec: TaskRecord) -> None:
    """SIGKILL the training process, as the kernel's OOM killer or SLURM's time limit do
    (no handler runs); its launcher then exits with the task's code."""
    os.kill(rec.pid, signal.SIGKILL)
    assert task.wait(timeout=180) == 128 + signal.SIGKILL


def net_states(rec: TaskRecord) -> dict[str, str]:
    return {i: n.state for i, n in rec.nets.items()}


def run_states(batch: Batch) -> dict[str, str]:
    """The MLflow status of every run the task's journal opened, by its journal key."""
    journal = batch.path / "journal" / "regressor-narrow" / "0.jsonl"
    c = mlflow_client(batch.manifest.tracking["uri"])
    return {key: c.get_run(run_id).info.status
            for key, run_id in read_state(journal)["runs"].items()}


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
