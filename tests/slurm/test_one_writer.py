"""A SQLite tracking store on SLURM has one writer: no task process opens the database (seen
in /proc/<pid>/fd while they run), and `netrain sync --follow` on the login node ships the
journals as they grow, epochs shown while the tasks still run, then stops by itself."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from tests.conftest import BIN, make_userproj, mlflow_client, run_cli
from tests.slurm.batches import show_json, states, wait_jobs


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _task_pids(batch: Path) -> set[int]:
    """Processes of the batch's array tasks: the sbatch script exports NETRAIN_BATCH_DIR,
    and everything it starts (launcher, training) inherits it."""
    mark = f"NETRAIN_BATCH_DIR={batch}".encode()
    out = set()
    for pid in _pids():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env:
            out.add(pid)
    return out


def _openers(db: Path) -> set[int]:
    """Processes with the database (or its journal/WAL) open."""
    out = set()
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(db)):
                out.add(pid)
                break
    return out


def test_sqlite_batch_on_slurm_has_one_writer_and_follow_shows_epochs(tmp_path: Path) -> None:
    proj = make_userproj(tmp_path / "p", "executor: slurm\nlauncher: mlflow\n")
    db = proj / "tracking" / "custom.db"
    # NETRAIN_SHIP_AFTER=2: a task that may ship for itself would open the store after 2 s
    # (30 s by default); each task trains ~8 s past its start-up
    env = {"NETRAIN_SHIP_AFTER": "2", "USERPROJ_SLEEP": "1"}
    # in a process of its own, as a user runs it: this test's process never opens the store
    r = run_cli("generate", "--models", "regressor.narrow=1", "--array", "2", "--nb-epoch", "8",
                "--epoch-samples", "64", "--no-check", "--executor", "slurm", "--run",
                cwd=proj, env=env)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[0])
    follow = subprocess.Popen([str(BIN / "netrain"), "sync", "--follow", batch.name,
                               "--every", "1"], cwd=proj, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    lines: list[tuple[str, bool]] = []  # (line, a task process was alive when it came)

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            lines.append((line.rstrip("\n"), bool(_task_pids(batch))))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen_tasks: set[int] = set()
    openers: set[int] = set()
    deadline = time.monotonic() + 300
    try:
        while follow.poll() is None:
            assert time.monotonic() < deadline, "sync --follow did not stop"
            seen_tasks |= _task_pids(batch)
            openers |= _openers(db)
            time.sleep(0.2)
        reader.join(10)
    finally:
        if follow.poll() is None:
            follow.kill()
    text = "\n".join(line for line, _ in lines)
    assert follow.returncode == 0, text
    assert seen_tasks, "no task process was seen running"
    assert not openers & seen_tasks, f"task processes opened {db}: {openers & seen_tasks}"
    assert openers == {follow.pid}, (openers, follow.pid, text)
    live = [line for line, alive in lines if " epoch " in f" {line}" and alive]
    assert live, f"no epoch shown while the tasks ran:\n{text}"
    assert "every journal shipped" in lines[-1][0]
    wait_jobs(batch)
    assert states(show_json(proj, batch)) == [["finished", "finished"]]
    runs = mlflow_client(f"sqlite:///{db}").search_runs(
        [mlflow_client(f"sqlite:///{db}").get_experiment_by_name(batch.name).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert len({r.data.tags["netrain.key"] for r in runs}) == 4
    # the batch's sync job either found the follower at work and left the shipping to it,
    # or started after the follower had shipped everything and ended (SLURM decides when it
    # starts): the two never ship at once
    [sync_log] = (batch / "logs").glob("sync_*.log")
    text = sync_log.read_text()
    assert "left to it" in text or "nothing to ship" in text, text
