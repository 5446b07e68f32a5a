"""A full disk mid-training, on a real small filesystem (a tmpfs mounted by the test): every
`netrain run` ends by itself with one line naming the file and the free space, no log holds
a traceback, and once there is room a plain `netrain run` finishes every network, each
exactly once in MLflow with its whole history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, invoke, make_userproj, mlflow_client
from tests.integration.faults import require_root, tmpfs, wait_for

pytestmark = pytest.mark.slow
SLUG = "regressor-wide"
EPOCHS = 40


def _fill(where: Path) -> Path:
    """Take every free byte of the filesystem at ``where``."""
    filler = where / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def _checkpointed(batch: Path, epoch: int) -> bool:
    metas = list((batch / "checkpoints").glob("*.ckpt.json"))
    try:
        return len(metas) == 2 and all(json.loads(m.read_text())["epoch"] >= epoch
                                       for m in metas)
    except (OSError, ValueError, KeyError):
        return False


def test_a_full_disk_mid_training_stops_cleanly_and_a_rerun_finishes(tmp_path: Path) -> None:
    require_root()
    proj = make_userproj(tmp_path / "p", "checkpoint:\n  every_epochs: 1\n")
    with tmpfs(proj / "runs", "24m"):
        r = invoke("generate", "--models", "regressor.wide=1", "--array", "2", "--nb-epoch",
                   str(EPOCHS), "--epoch-samples", "64", "--no-check", cwd=proj)
        assert r.code == 0, r.text
        batch = Path(r.out.strip().splitlines()[-1])
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", USERPROJ_SLEEP="0.05")
        proc = subprocess.Popen([str(BIN / "netrain"), "run", batch.name, "-j", "2"],
                                cwd=proj, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        if not wait_for(lambda: _checkpointed(batch, 3), 240):
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"never checkpointed: {proc.communicate()[1][-3000:]}")
        filler = _fill(proj / "runs")
        try:
            _, err = proc.communicate(timeout=90)  # ends by itself
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"netrain run did not end: {proc.communicate()[1][-3000:]}")
        print(err)
        assert proc.returncode != 0, err
        assert "Traceback" not in err, err
        # Either netrain run's own write failed (one line, the running tasks stopped), or
        # the tasks' writes failed first and each says so as it ends (resumable).
        errors = [line for line in err.splitlines() if line.startswith("netrain: error:")]
        # (h5py's own OSError names no file: "cannot write: No space left ...")
        stopped = [line for line in err.splitlines() if ": interrupted (stopped: cannot "
                   "write" in line]
        assert len(errors) + len(stopped) >= 1 and len(errors) <= 1, err
        for line in errors + stopped:
            assert "No space left on device (" in line and " free in " in line, err
        if errors:
            assert f"netrain run {batch.name} resumes them" in errors[0], err
        else:
            assert "resumable at epoch" in stopped[0], err
        filler.unlink()  # room again
        r = subprocess.run([str(BIN / "netrain"), "run", batch.name, "-j", "2"], cwd=proj,
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        for log in (batch / "logs").glob("*.log"):
            assert "Traceback" not in log.read_text(), log
        assert invoke("sync", batch.name, cwd=proj).code == 0
        c = mlflow_client("sqlite:///" + str(proj / "tracking" / "custom.db"))
        exp = c.get_experiment_by_name(batch.name)
        runs = c.search_runs([exp.experiment_id])
        nets = [x for x in runs if "net_index" in x.data.tags]
        assert len(runs) == 4 and len(nets) == 2, [x.data.tags for x in runs]
        assert {x.info.status for x in runs} == {"FINISHED"}
        for net in nets:
            steps = [m.step for m in c.get_metric_history(net.info.run_id, "loss")]
            assert sorted(steps) == list(range(EPOCHS)), steps
