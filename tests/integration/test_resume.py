"""Fault tolerance with real task processes and real MLflow: a signalled task checkpoints and
resumes in the same runs; a task killed with SIGKILL resumes from its last checkpoint; a
finished network is never trained again; every network is one run with contiguous steps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import BIN, invoke, make_userproj, mlflow_client, run_cli

pytestmark = pytest.mark.slow


def _generate(userproj: Path, nets: int, epochs: int) -> Path:
    r = invoke("generate", "--models", f"regressor.wide={nets}", "--array", "1", "--nb-epoch",
                str(epochs), "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    return Path(r.out.strip().splitlines()[-1])


def _generate_tasks(userproj: Path, tasks: int, epochs: int) -> Path:
    r = invoke("generate", "--models", "regressor.wide=1", "--array", str(tasks),
               "--nb-epoch", str(epochs), "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    return Path(r.out.strip().splitlines()[-1])


def _start(batch: Path, sleep: str = "0.05") -> subprocess.Popen[bytes]:
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local",
               USERPROJ_SLEEP=sleep, NETRAIN_LOG=str(batch / "logs" / "first.log"))
    return subprocess.Popen(["bash", str(batch / "scripts" / "regressor-wide-sbatch.sh")],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _record(batch: Path) -> dict:
    path = batch / "records" / "regressor-wide" / "0.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _wait(cond, timeout: float = 120) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.3)
    return False


def _journal_steps(batch: Path) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    path = batch / "journal" / "regressor-wide" / "0.jsonl"
    if not path.exists():
        return steps
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("ev") == "metrics" and "/n" in ev["key"]:
            steps.setdefault(ev["key"], []).append(ev["step"])
    return steps


def _mlflow_runs(userproj: Path, batch: Path) -> list:  # type: ignore[type-arg]
    r = invoke("sync", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    c = mlflow_client("sqlite:///" + str(userproj / "tracking" / "custom.db"))
    exp = c.get_experiment_by_name(batch.name)
    return [(run, c) for run in c.search_runs([exp.experiment_id])]


def _assert_one_run_per_network(userproj: Path, batch: Path, nets: int, epochs: int) -> None:
    runs = _mlflow_runs(userproj, batch)
    children = [(r, c) for r, c in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == nets + 1 and len(children) == nets
    assert {r.info.status for r, _ in runs} == {"FINISHED"}
    for run, c in children:
        history = c.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(epochs)), run.info.run_name


def test_signal_checkpoints_and_run_resumes_in_the_same_runs(userproj: Path) -> None:
    batch = _generate(userproj, nets=1, epochs=40)
    proc = _start(batch)
    if not _wait(lambda: len(_journal_steps(batch).get("regressor-wide/0/n0", [])) >= 5):
        proc.kill()
        pytest.fail("the task never trained 5 epochs")
    os.kill(proc.pid, signal.SIGTERM)  # what SLURM does to the batch shell on scancel
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    rec = _record(batch)
    assert rec["state"] == "killed"
    net = rec["nets"]["0"]
    assert net["state"] == "interrupted" and net["checkpoint_epoch"] >= 5
    reached = net["checkpoint_epoch"]
    meta = json.loads((batch / "checkpoints" / f"{net['stem']}.ckpt.json").read_text())
    assert meta["epoch"] == reached and meta["key"] == "regressor-wide/0/n0"
    assert (batch / "checkpoints" / meta["model_file"]).is_file()

    r = run_cli("run", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    log = (batch / "logs" / "regressor-wide_local_0.log").read_text()
    assert f"resuming from its checkpoint at epoch {reached}" in log
    rec = _record(batch)
    assert rec["state"] == "finished" and rec["nets"]["0"]["epochs"] == 40
    assert not list((batch / "checkpoints").glob("*.ckpt.json"))  # removed after success
    steps = _journal_steps(batch)["regressor-wide/0/n0"]
    assert steps == list(range(40))  # contiguous, none twice
    _assert_one_run_per_network(userproj, batch, nets=1, epochs=40)


def test_sigkill_resumes_from_the_last_checkpoint_and_keeps_finished_networks(
        tmp_path: Path) -> None:
    userproj = make_userproj(tmp_path / "p", "checkpoint:\n  every_epochs: 1\n")
    batch = _generate(userproj, nets=2, epochs=20)
    proc = _start(batch)
    started = _wait(lambda: _record(batch).get("nets", {}).get("1", {}).get("state") == "running"
                    and len(_journal_steps(batch).get("regressor-wide/0/n1", [])) >= 3)
    if not started:
        proc.kill()
        pytest.fail("the task never reached its second network")
    # out of memory, node failure: the training process dies, no handler runs
    os.kill(_record(batch)["pid"], signal.SIGKILL)
    proc.wait(timeout=30)
    rec = _record(batch)
    assert rec["nets"]["0"]["state"] == "finished"
    weights0 = batch / "weights" / f"{rec['nets']['0']['stem']}.weights.h5"
    before = weights0.stat().st_mtime_ns
    done_before = len(_journal_steps(batch)["regressor-wide/0/n1"])

    r = run_cli("run", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    log = (batch / "logs" / "regressor-wide_local_0.log").read_text()
    assert "1 network(s) finished in an earlier attempt are kept" in log
    assert weights0.stat().st_mtime_ns == before  # not trained again
    rec = _record(batch)
    assert [rec["nets"][k]["state"] for k in ("0", "1")] == ["finished", "finished"]
    steps = _journal_steps(batch)
    assert steps["regressor-wide/0/n0"] == list(range(20))
    assert steps["regressor-wide/0/n1"] == list(range(20))
    # epochs trained beyond the plan: at most one checkpoint interval (one epoch) per stop
    resumed = int(log.split("resuming from its checkpoint at epoch ")[1].split()[0])
    assert done_before - resumed <= 1
    keys = Counter(json.loads(line).get("key") for line in
                   (batch / "journal" / "regressor-wide" / "0.jsonl").read_text().splitlines())
    assert keys["regressor-wide/0/n1"] > 0
    _assert_one_run_per_network(userproj, batch, nets=2, epochs=20)


def test_a_task_is_never_trained_by_two_processes_at_once(userproj: Path) -> None:
    import fcntl

    batch = _generate(userproj, nets=1, epochs=2)
    lock = batch / "journal" / "regressor-wide" / "0.jsonl.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as fh:
        fh.write("pid 4242 on elsewhere")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX)  # a task of this index still stopping somewhere
        env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local")
        p = subprocess.run(["bash", str(batch / "scripts" / "regressor-wide-sbatch.sh")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "already being trained by another process (pid 4242 on elsewhere)" in p.stdout
    assert not (batch / "records" / "regressor-wide" / "0.json").exists()
    assert not (batch / "journal" / "regressor-wide" / "0.jsonl").exists()


def test_a_task_killed_under_netrain_run_leaves_no_run_running_and_resumes(
        tmp_path: Path) -> None:
    userproj = make_userproj(tmp_path / "p", "checkpoint:\n  every_epochs: 1\n")
    batch = _generate(userproj, nets=1, epochs=30)
    env = dict(os.environ, USERPROJ_SLEEP="0.1")
    run = subprocess.Popen([str(Path(sys.executable).parent / "netrain"), "run", batch.name],
                           cwd=userproj, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if not _wait(lambda: len(_journal_steps(batch).get("regressor-wide/0/n0", [])) >= 4):
        run.kill()
        pytest.fail("the task never trained 4 epochs")
    os.kill(_record(batch)["pid"], signal.SIGKILL)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 1, out
    rec = _record(batch)
    assert rec["state"] == "died" and rec["nets"]["0"]["state"] == "interrupted"
    reached = rec["nets"]["0"]["checkpoint_epoch"]
    assert reached >= 3
    runs = _mlflow_runs(userproj, batch)
    assert "RUNNING" not in {r.info.status for r, _ in runs}
    net = next(r for r, _ in runs if "mlflow.parentRunId" in r.data.tags)
    assert net.info.status == "KILLED" and net.data.tags["netrain.state"] == "resumable"
    r = invoke("show", batch.name, "--json", cwd=userproj)
    assert r.code == 0, r.text
    r = run_cli("run", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    assert _journal_steps(batch)["regressor-wide/0/n0"] == list(range(30))
    _assert_one_run_per_network(userproj, batch, nets=1, epochs=30)
    final = next(r for r, _ in _mlflow_runs(userproj, batch) if "mlflow.parentRunId" in r.data.tags)
    assert final.info.run_id == net.info.run_id  # resumed in the same run
    assert final.data.tags["netrain.state"] == "finished"
    task = next(r for r, _ in _mlflow_runs(userproj, batch)
                if "mlflow.parentRunId" not in r.data.tags)
    assert task.info.status == "FINISHED"
    assert task.data.tags["netrain.state"] == "finished"  # no longer "died" from the kill


def test_resubmit_failed_on_this_machine_resumes_in_the_same_runs(userproj: Path) -> None:
    # resubmit used to start its tasks as `run --rerun` does: a new key, new runs, epoch 0
    batch = _generate(userproj, nets=1, epochs=30)
    proc = _start(batch)
    if not _wait(lambda: len(_journal_steps(batch).get("regressor-wide/0/n0", [])) >= 4):
        proc.kill()
        pytest.fail("the task never trained 4 epochs")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    reached = _record(batch)["nets"]["0"]["checkpoint_epoch"]
    assert reached >= 4

    r = run_cli("resubmit", batch.name, "--failed", cwd=userproj)
    assert r.code == 0, r.text
    rec = _record(batch)
    assert rec["state"] == "finished" and rec["key"] == "regressor-wide/0", rec
    log = (batch / "logs" / "regressor-wide_local_0.log").read_text()
    assert f"resuming from its checkpoint at epoch {reached}" in log
    assert list(_journal_steps(batch)) == ["regressor-wide/0/n0"]  # no second run's key
    assert _journal_steps(batch)["regressor-wide/0/n0"] == list(range(30))


def test_tasks_signalled_under_netrain_run_are_reported_interrupted_not_failed(
        userproj: Path) -> None:
    batch = _generate_tasks(userproj, tasks=2, epochs=200)
    env = dict(os.environ, USERPROJ_SLEEP="0.05", PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.Popen([str(BIN / "netrain"), "run", batch.name, "-j", "2"], cwd=userproj,
                            env=env, stderr=subprocess.PIPE, text=True)
    records = [batch / "records" / "regressor-wide" / f"{i}.json" for i in (0, 1)]

    def training() -> bool:
        return all(json.loads(r.read_text())["nets"].get("0", {}).get("state") == "running"
                   if r.exists() else False for r in records)
    if not _wait(training, 180):
        proc.kill()
        pytest.fail("the tasks never trained")
    time.sleep(1)
    for r, sig in zip(records, (signal.SIGTERM, signal.SIGUSR1), strict=True):
        os.kill(json.loads(r.read_text())["pid"], sig)  # as scancel and SLURM's warning do
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # not done yet
    assert "FAILED" not in err, err
    for sig in ("SIGTERM", "SIGUSR1"):
        assert re.search(rf"task \d: interrupted \(stopped by signal {sig}; resumable at "
                         r"epoch \d+\)", err), err
    assert "0 ok, 0 failed, 2 interrupted (resumable: netrain run" in err, err


def test_netrain_run_says_a_task_was_killed_and_blames_no_environment(userproj: Path) -> None:
    """kill -9 of the training process (what the OOM killer does) during `netrain run`: the
    task's line says it was killed by SIGKILL; no hint to check the environment."""
    batch = _generate(userproj, nets=1, epochs=200)
    env = dict(os.environ, USERPROJ_SLEEP="0.05", PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    proc = subprocess.Popen([str(BIN / "netrain"), "run", batch.name], cwd=userproj, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        if not _wait(lambda: _record(batch).get("state") == "running"
                     and len(_journal_steps(batch).get("regressor-wide/0/n0", [])) >= 2):
            pytest.fail("the task never started training")
        os.kill(_record(batch)["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err
    assert re.search(r"regressor.wide task 0: KILLED by SIGKILL \(exit 137\)", err), err
    assert "netrain check" not in err, err
