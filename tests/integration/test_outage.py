"""Tracking outages with real training tasks and a real `netrain server`: training never
fails or waits because MLflow is away; once it is back, every run is FINISHED with every
metric point exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, invoke, mlflow_client
from tests.integration.shipping import Server

pytestmark = pytest.mark.slow
EPOCHS = 30


def _project(tmp_path: Path) -> tuple[Path, Server]:
    from netrain.track.server import free_port

    proj = tmp_path / "proj"
    shutil.copytree(FIXTURES / "userproj", proj)
    port = free_port()
    (proj / "netrain.yaml").write_text(
        "trainings_dir: runs\nmain_script: src/main.py\n"
        f"tracking_uri: http://127.0.0.1:{port}\nworkers: 2\n")
    (proj / "runs").mkdir()
    return proj, Server(proj, port=port)


def _generate(proj: Path) -> Path:
    r = invoke("generate", "--models", "regressor.wide=2", "--array", "2", "--nb-epoch",
                str(EPOCHS), "--epoch-samples", "64", "--no-check", cwd=proj)
    assert r.code == 0, r.text
    return Path(r.out.strip().splitlines()[-1])


def _run(proj: Path, batch: Path, drain: str) -> subprocess.Popen[str]:
    env = dict(os.environ, USERPROJ_SLEEP="0.1", NETRAIN_DRAIN_TIMEOUT=drain,
               NETRAIN_SHIP_BACKOFF_MAX="2")
    return subprocess.Popen([str(Path(sys.executable).parent / "netrain"), "run", batch.name],
                            cwd=proj, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _metric_lines(batch: Path) -> int:
    return sum(p.read_text().count('"ev":"metrics"') + p.read_text().count('"ev": "metrics"')
               for p in (batch / "journal").rglob("*.jsonl"))


def _everything_arrived(proj: Path, server: Server, batch: Path) -> None:
    r = invoke("sync", batch.name, cwd=proj)
    assert r.code == 0, r.text
    c = mlflow_client(server.url)
    exp = c.get_experiment_by_name(batch.name)
    runs = c.search_runs([exp.experiment_id])
    nets = [x for x in runs if "net_index" in x.data.tags]
    assert len(runs) == 6 and len(nets) == 4, [x.info.run_name for x in runs]
    assert {x.info.status for x in runs} == {"FINISHED"}
    for x in nets:
        for key in ("loss", "val_loss"):
            steps = [m.step for m in c.get_metric_history(x.info.run_id, key)]
            assert sorted(steps) == list(range(EPOCHS)), (x.info.run_name, key, steps)
    again = invoke("sync", batch.name, cwd=proj)
    assert again.code == 0 and "nothing to ship" in again.text, again.text


def test_server_stopped_30_s_mid_batch(tmp_path: Path) -> None:
    proj, server = _project(tmp_path)
    server.start()
    try:
        batch = _generate(proj)
        run = _run(proj, batch, drain="120")
        deadline = time.monotonic() + 180
        while _metric_lines(batch) < 6 and time.monotonic() < deadline:
            time.sleep(0.3)
        server.stop()
        time.sleep(30)  # training goes on, writing its journals
        server.start()
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0 and "2 ok, 0 failed" in out, out
        assert "FAILED" not in out
        _everything_arrived(proj, server, batch)
    finally:
        server.stop()


def test_server_down_for_the_whole_batch_then_sync(tmp_path: Path) -> None:
    proj, server = _project(tmp_path)
    server.start()
    batch = _generate(proj)  # generate creates the experiment: the server is up for that
    server.stop()
    try:
        # the default drain (60 s) and retry bound (30 s a journal): once one journal finds
        # tracking down, the run leaves the rest for netrain sync at once
        run = _run(proj, batch, drain="60")
        assert run.stdout is not None
        lines = [(time.monotonic(), line) for line in run.stdout]
        run.wait(60)
        end = time.monotonic()
        out = "".join(line for _, line in lines)
        assert run.returncode == 0 and "2 ok, 0 failed" in out, out
        last_task = max(t for t, line in lines if line.startswith("netrain: [2/2]"))
        assert end - last_task < 8, (end - last_task, out)
        assert f"netrain: 2 journal(s) not shipped to MLflow yet (tracking unreachable?): " \
               f"ship them with: netrain sync {batch.name}" in out, out
        assert "netrain: netrain:" not in out, out
        assert len(list((batch / "weights").glob("*.weights.h5"))) == 4
        r = invoke("show", batch.name, "--json", cwd=proj)
        data = json.loads(r.out)
        assert data["events_waiting"] == 2
        assert [t["state"] for t in data["models"][0]["tasks"]] == ["finished", "finished"]
        server.start()
        _everything_arrived(proj, server, batch)
    finally:
        server.stop()
