"""A real `netrain server`: it starts lean and answers /health; a follower shipping through it
survives the server stopping and restarting; with the server down throughout, `netrain sync`
uploads everything later, and a second sync changes nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netrain.track.journal import journal_path, pending, unshipped_bytes
from netrain.track.server import healthy, rss_mib
from tests.integration.shipping import (
    BIN,
    ROOT,
    Server,
    TaskSpec,
    env,
    make_batch,
    project,
    verify,
    writer_process,
)


def _follower(batch: Path, uri: str, spec: TaskSpec, pid: int, drain: str = "120") -> Any:
    e = env()
    e["NETRAIN_SHIP_BACKOFF_MAX"] = "1"
    e["NETRAIN_SHIP_HTTP_TIMEOUT"] = "10"
    e["NETRAIN_DRAIN_TIMEOUT"] = drain
    j = journal_path(batch, "c-a", spec.index)
    return subprocess.Popen([sys.executable, "-m", "netrain.track.shipper", "follow", str(j),
                             "--batch-dir", str(batch), "--uri", uri, "--pid", str(pid)],
                            cwd=ROOT, env=e, stderr=subprocess.PIPE, text=True)


def test_server_starts_lean_and_answers_health(tmp_path: Path) -> None:
    proj = project(tmp_path)
    s = Server(proj).start()
    try:
        assert healthy(s.url)
        assert s.proc is not None
        rss = rss_mib(s.proc.pid)
        print(f"netrain server: ready in {s.startup:.1f} s, {rss:.0f} MiB RSS")
        assert rss > 0
        assert (proj / "trainings" / "mlflow.db").is_file()
    finally:
        s.stop()


def test_server_refuses_a_password_in_the_uri(tmp_path: Path) -> None:
    proj = project(tmp_path)
    p = subprocess.run([str(BIN / "netrain"), "server", "--backend-store-uri",
                        "postgresql+psycopg2://me:s3cret@db.example/mlflow"], cwd=proj,
                       env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.startswith("netrain: error: ") and len(p.stderr.splitlines()) == 1
    assert "PGPASSWORD" in p.stderr and "s3cret" not in p.stderr + p.stdout


def test_server_stopped_mid_follow_and_restarted(tmp_path: Path) -> None:
    proj = project(tmp_path)
    server = Server(proj).start()
    try:
        batch, exp_id = make_batch(proj / "trainings", server.url)
        spec = TaskSpec(0, nets=3, epochs=30)
        writer = writer_process(batch, exp_id, spec, delay=0.1)
        follower = _follower(batch, server.url, spec, writer.pid)
        time.sleep(2.0)
        server.stop()  # down for several seconds while the task goes on writing
        time.sleep(6.0)
        assert writer.poll() is None or writer.returncode == 0
        server.start()
        assert writer.wait(120) == 0
        _, err = follower.communicate(timeout=180)
        assert follower.returncode == 0, err
        assert "retrying" in err
        assert unshipped_bytes(journal_path(batch, "c-a", 0)) == 0
        verify(server.url, exp_id, batch, [spec])
    finally:
        server.stop()


def test_server_down_for_the_whole_follow_then_sync(tmp_path: Path) -> None:
    proj = project(tmp_path)
    server = Server(proj).start()
    batch, exp_id = make_batch(proj / "trainings", server.url)
    server.stop()
    try:
        spec = TaskSpec(1, nets=2, epochs=4)
        writer = writer_process(batch, exp_id, spec, delay=0.0)
        follower = _follower(batch, server.url, spec, writer.pid, drain="2")
        assert writer.wait(120) == 0
        _, err = follower.communicate(timeout=120)
        assert follower.returncode == 3, err  # not everything shipped: left for sync
        assert pending(batch) == [journal_path(batch, "c-a", 1)]
        down = subprocess.run([str(BIN / "netrain"), "sync", "--retry-for", "1"], cwd=proj,
                              env=env(), capture_output=True, text=True, timeout=300)
        assert down.returncode == 1, down.stdout + down.stderr
        assert down.stderr.startswith("netrain: error: 1 journal(s) not fully shipped")
        assert pending(batch) == [journal_path(batch, "c-a", 1)]
        server.start()
        sync = subprocess.run([str(BIN / "netrain"), "sync"], cwd=proj, env=env(),
                              capture_output=True, text=True, timeout=300)
        assert sync.returncode == 0, sync.stderr
        assert f"{batch.name} journal/c-a/1.jsonl: 3 runs created" in sync.stdout
        verify(server.url, exp_id, batch, [spec])
        again = subprocess.run([str(BIN / "netrain"), "sync", batch.name], cwd=proj,
                               env=env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0
        assert "nothing to ship" in again.stdout
        verify(server.url, exp_id, batch, [spec])
    finally:
        server.stop()


def _server(proj: Path, *args: str, extra: dict[str, str] | None = None) -> Any:
    e = {k: v for k, v in env().items()
         if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    e.update(extra or {})
    return subprocess.run([str(BIN / "netrain"), "server", *args], cwd=proj, env=e,
                          capture_output=True, text=True, timeout=60)


def test_server_on_the_network_needs_auth_or_insecure(tmp_path: Path) -> None:
    import socket

    proj = project(tmp_path)
    p = _server(proj, "--host", "0.0.0.0")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "--auth" in p.stderr and "--insecure" in p.stderr
    assert not (proj / "trainings" / "mlflow.db").exists()  # refused before anything
    # --insecure lets it past that rule: it goes on to bind (here a taken port)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = str(taken.getsockname()[1])
        p = _server(proj, "--host", "0.0.0.0", "--port", port, "--insecure")
    assert p.returncode == 1 and f"cannot listen on 0.0.0.0:{port}" in p.stderr, p.stderr
    # --auth takes the admin from the environment only, and says which variable is missing
    p = _server(proj, "--host", "0.0.0.0", "--auth",
                extra={"MLFLOW_TRACKING_USERNAME": "someone"})
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "needs MLFLOW_TRACKING_PASSWORD in the environment" in p.stderr
    p = _server(proj, "--host", "127.0.0.1", "--auth",
                extra={"MLFLOW_TRACKING_USERNAME": "someone",
                       "MLFLOW_TRACKING_PASSWORD": "short"})
    assert p.returncode == 2 and "shorter than 12" in p.stderr and "short" not in p.stdout
