"""Every netrain process ends after an error, whatever threads or children it holds: an
error injected while it works (a child killed, a directory turned read-only) ends it within
10 s, with one line and no traceback. Before netrain.exits told thread pools to stop, an
error in `netrain run` left it waiting forever for its idle pool workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT, invoke, make_userproj, mlflow_client, run_cli
from tests.integration.faults import read_only, require_root, wait_for

pytestmark = pytest.mark.slow

SLUG = "regressor-wide"


def _generate(userproj: Path, array: int, *extra: str) -> Path:
    r = invoke("generate", "--models", "regressor.wide=1", "--array", str(array), "--nb-epoch",
               "400", "--epoch-samples", "64", "--no-check", *extra, cwd=userproj)
    assert r.code == 0, r.text
    return Path(r.out.strip().splitlines()[-1])


def _start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    e = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", USERPROJ_SLEEP="0.05", **env)
    e.pop("NETRAIN_CONFIG", None)
    return subprocess.Popen(args, cwd=cwd, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _record(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _training(path: Path) -> bool:
    return _record(path).get("nets", {}).get("0", {}).get("state") == "running"


def _ends_within(proc: subprocess.Popen[str], seconds: float) -> tuple[int, str]:
    """The process's exit status and stderr; fails (and kills it) if it is still running
    ``seconds`` from now."""
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"still running {seconds:.0f} s after the error; stderr: {err[-2000:]}")
    return proc.returncode, err


def _one_line_no_traceback(err: str, batch: Path) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("netrain: error:")]
    assert len(errors) == 1, err
    assert "Read-only file system" in errors[0], err
    for log in (batch / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log


def _kill_a_task_with_records_read_only(proc: subprocess.Popen[str], batch: Path,
                                        records: list[Path]) -> tuple[int, str]:
    """Once every task trains, make the records read-only and SIGKILL the first task's
    process: healing it (writing its record) fails in the middle of the run."""
    if not wait_for(lambda: all(_training(r) for r in records), 180):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the tasks never started training: {proc.communicate()[1][-2000:]}")
    with read_only(records[0].parent):
        os.kill(_record(records[0])["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        rc, err = _ends_within(proc, 10)
        print(f"ended {time.monotonic() - t0:.1f} s after the error: {err}")
        return rc, err


def test_run_ends_after_an_error_while_its_workers_live(userproj: Path) -> None:
    require_root()
    batch = _generate(userproj, 2)
    proc = _start([str(BIN / "netrain"), "run", batch.name, "-j", "3"], userproj)
    records = [batch / "records" / SLUG / f"{i}.json" for i in (0, 1)]
    rc, err = _kill_a_task_with_records_read_only(proc, batch, records)
    assert rc == 1, err
    _one_line_no_traceback(err, batch)
    assert str(records[0].parent) in err  # the line names where it could not write


def test_generate_run_ends_after_an_error(userproj: Path) -> None:
    require_root()
    proc = _start([str(BIN / "netrain"), "generate", "--models", "regressor.wide=1", "--array",
                   "1", "--nb-epoch", "400", "--epoch-samples", "64", "--no-check", "--run"],
                  userproj)
    runs = userproj / "runs"
    found = wait_for(lambda: list(runs.glob(f"*/records/{SLUG}/0.json")), 60)
    assert found, proc.communicate()[1] if proc.poll() is not None else "no batch"
    record = next(runs.glob(f"*/records/{SLUG}/0.json"))
    batch = record.parent.parent.parent
    rc, err = _kill_a_task_with_records_read_only(proc, batch, [record])
    assert rc == 1, err
    _one_line_no_traceback(err, batch)


def _network_run_id(userproj: Path, batch: Path) -> str:
    assert invoke("sync", batch.name, cwd=userproj).code == 0
    c = mlflow_client("sqlite:///" + str(userproj / "tracking" / "custom.db"))
    exp = c.get_experiment_by_name(batch.name)
    runs = [r for r in c.search_runs([exp.experiment_id]) if "net_index" in r.data.tags]
    return str(runs[0].info.run_id)


def test_retrain_ends_after_an_error(userproj: Path) -> None:
    require_root()
    r = invoke("generate", "--models", "regressor.wide=1", "--array", "1", "--nb-epoch", "2",
               "--epoch-samples", "64", "--no-check", "--run", cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    proc = _start([str(BIN / "netrain"), "retrain", _network_run_id(userproj, batch),
                   "--nb-epoch", "400", "--executor", "local"], userproj)
    retrains = batch / "records" / "retrain"
    found = wait_for(lambda: list(retrains.glob("*.json")), 60)
    assert found, proc.communicate()[1] if proc.poll() is not None else "no retrain record"
    record = next(retrains.glob("*.json"))
    rc, err = _kill_a_task_with_records_read_only(proc, batch, [record])
    assert rc == 1, err
    _one_line_no_traceback(err, batch)


# --- the journal's shippers: `netrain sync` and `python -m netrain.track.shipper` ------------

@pytest.fixture(scope="module")
def unshipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A project and a batch whose one finished task left its journal unshipped."""
    userproj = make_userproj(tmp_path_factory.mktemp("unshipped") / "userproj")
    r = invoke("generate", "--models", "regressor.wide=1", "--array", "1", "--nb-epoch", "2",
               "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local",
               NETRAIN_SHIPPER="off", NETRAIN_LOG=str(batch / "logs" / "task.log"))
    script = batch / "scripts" / f"{SLUG}-sbatch.sh"
    subprocess.run(["bash", str(script)], env=env, check=True,
                   capture_output=True, timeout=300)
    return userproj, batch


def _journal(batch: Path) -> Path:
    return batch / "journal" / SLUG / "0.jsonl"


def test_sync_ends_after_an_error(unshipped: tuple[Path, Path]) -> None:
    require_root()
    userproj, batch = unshipped
    with read_only(_journal(batch).parent):  # its shipping state cannot be written
        proc = _start([str(BIN / "netrain"), "sync", batch.name], userproj)
        rc, err = _ends_within(proc, 30)
    assert rc == 1, err
    _one_line_no_traceback(err, batch)


def test_shipper_ends_after_an_error(unshipped: tuple[Path, Path]) -> None:
    require_root()
    userproj, batch = unshipped
    writer = subprocess.Popen(["sleep", "600"])  # a writer that is still alive
    uri = "sqlite:///" + str(userproj / "tracking" / "custom.db")
    try:
        with read_only(_journal(batch).parent):
            proc = _start([sys.executable, "-m", "netrain.track.shipper", "follow",
                           str(_journal(batch)), "--batch-dir", str(batch), "--uri", uri,
                           "--pid", str(writer.pid)], ROOT)
            rc, err = _ends_within(proc, 30)
    finally:
        writer.kill()
        writer.wait()
    assert rc == 1, err
    assert "Traceback" not in err and "Read-only file system" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_sync_of_every_batch_goes_on_past_a_corrupt_one(unshipped: tuple[Path, Path]) -> None:
    userproj, batch = unshipped
    broken = batch.parent / "00000000-000000-0000"  # listed first
    broken.mkdir()
    text = (batch / "batch.yaml").read_text()
    (broken / "batch.yaml").write_text(text[:len(text) // 2])  # cut short mid-write
    try:
        r = run_cli("sync", cwd=userproj)
    finally:
        shutil.rmtree(broken)
    assert r.code == 1, r.text
    assert f"netrain: skipped {broken.name}: " in r.err and "batch.yaml" in r.err, r.text
    assert f"{batch.name} journal/{SLUG}/0.jsonl: 2 runs created" in r.out, r.text
    assert "Traceback" not in r.text


# --- the launcher ----------------------------------------------------------------------

def test_launcher_ends_when_its_task_is_killed(tmp_path: Path) -> None:
    userproj = make_userproj(tmp_path / "userproj")
    cfg = userproj / "netrain.yaml"
    cfg.write_text(cfg.read_text().replace("launcher: direct", "launcher: mlflow"))
    batch = _generate(userproj, 1)
    assert "netrain.execute.launcher" in (batch / "scripts" / f"{SLUG}-sbatch.sh").read_text()
    env = dict(SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local",
               NETRAIN_LOG=str(batch / "logs" / "task.log"))
    proc = _start(["bash", str(batch / "scripts" / f"{SLUG}-sbatch.sh")], batch, **env)
    record = batch / "records" / SLUG / "0.json"
    if not wait_for(lambda: _training(record), 180):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the task never trained: {proc.communicate()[1][-2000:]}")
    os.kill(_record(record)["pid"], signal.SIGKILL)
    rc, err = _ends_within(proc, 10)
    assert rc == 128 + signal.SIGKILL, err
    assert "Traceback" not in err, err


# --- the long-running servers: `netrain server`, `netrain ui` ----------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


@pytest.mark.parametrize("command", ["server", "ui"])
def test_server_and_ui_end_when_mlflow_dies(userproj: Path, command: str) -> None:
    proc = _start([str(BIN / "netrain"), command, "--port", str(_free_port())], userproj)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the URL (ui) or the tracking_uri line (server)
    assert "http://127.0.0.1:" in line, proc.communicate()[1][-2000:]
    (child,) = _children(proc.pid)
    os.killpg(child, signal.SIGKILL)  # mlflow and its workers die under it
    rc, err = _ends_within(proc, 10)
    assert rc == 128 + signal.SIGKILL if command == "server" else rc == 1, err
    assert f"netrain: error: mlflow {command} ended with signal 9" in err, err
