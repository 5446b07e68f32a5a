"""A batch moved to another project works where it lies: show flags it, run resumes it
there and sync ships it to the new project's store; nothing is written into the old place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import invoke, make_userproj, mlflow_client, snapshot_tree

pytestmark = pytest.mark.slow
SLUG = "regressor-wide"


def _batch(proj: Path, epochs: int) -> Path:
    r = invoke("generate", "--models", "regressor.wide=1", "--array", "1", "--nb-epoch",
               str(epochs), "--epoch-samples", "64", "--no-check", cwd=proj)
    assert r.code == 0, r.text
    return Path(r.out.strip().splitlines()[-1])


def _task(batch: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local",
               USERPROJ_SLEEP="0.1", NETRAIN_LOG=str(batch / "logs" / "first.log"))
    return subprocess.Popen(["bash", str(batch / "scripts" / f"{SLUG}-sbatch.sh")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _record(batch: Path) -> dict:
    p = batch / "records" / SLUG / "0.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _checkpoint_epoch(batch: Path) -> int:
    for meta in (batch / "checkpoints").glob("*.ckpt.json"):
        try:
            return int(json.loads(meta.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            pass
    return 0


def _runs(uri: str, name: str) -> list:  # type: ignore[type-arg]
    c = mlflow_client(uri)
    exp = c.get_experiment_by_name(name)
    return [] if exp is None else [(r, c) for r in c.search_runs([exp.experiment_id])]


def test_a_moved_finished_and_half_trained_batch_work_in_their_new_place(
        tmp_path: Path) -> None:
    old = make_userproj(tmp_path / "old")
    done = _batch(old, 2)
    assert _task(done).wait(timeout=300) == 0
    half = _batch(old, 100)
    proc = _task(half)
    deadline = time.monotonic() + 180
    while _checkpoint_epoch(half) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "never checkpointed"
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    old_uri = "sqlite:///" + str(old / "tracking" / "custom.db")
    before = {b.name: len(_runs(old_uri, b.name)) for b in (done, half)}

    new = make_userproj(tmp_path / "new")
    (new / "runs").mkdir()
    for b in (done, half):
        shutil.move(str(b), str(new / "runs" / b.name))
    moved_half = new / "runs" / half.name
    old_tree = snapshot_tree(old)

    r = invoke("show", cwd=new)
    assert r.code == 0, r.text
    for b in (done, half):
        assert f"netrain: batch {b.name} was moved or copied from {b}; it still names its " \
            f"tracking store {old_uri}" in r.err, r.text

    r = invoke("run", half.name, cwd=new)
    assert r.code == 0, r.text
    assert f"batch {half.name} was moved from {half}: its tracking now goes to" in r.err
    assert "netrain: netrain:" not in r.err
    rec = _record(moved_half)
    assert rec["state"] == "finished" and rec["nets"]["0"]["epochs"] == 100, rec
    log = (moved_half / "logs" / f"{SLUG}_local_0.log").read_text()
    assert "resuming from its checkpoint at epoch" in log, log

    r = invoke("sync", cwd=new)
    assert r.code == 0, r.text
    assert snapshot_tree(old) == old_tree  # nothing written into the old project
    assert not half.exists() and not done.exists()
    new_uri = "sqlite:///" + str(new / "tracking" / "custom.db")
    for b, epochs in ((done, 2), (half, 100)):
        runs = _runs(new_uri, b.name)
        nets = [(x, c) for x, c in runs if "net_index" in x.data.tags]
        assert len(runs) == 2 and {x.info.status for x, _ in runs} == {"FINISHED"}, b
        (net, c), = nets
        steps = [m.step for m in c.get_metric_history(net.info.run_id, "loss")]
        assert sorted(steps) == list(range(epochs)), (b, steps)
        assert str(new) in c.get_experiment(net.info.experiment_id).artifact_location
    assert {b.name: len(_runs(old_uri, b.name)) for b in (done, half)} == before
    r = invoke("show", cwd=new)
    assert "was moved" not in r.err, r.text
