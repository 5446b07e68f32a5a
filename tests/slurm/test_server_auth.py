"""`netrain server --auth` on a network address, with a batch on SLURM: clients without
credentials or with a wrong password are refused in one line, the batch ships exactly once
with them (sbatch passes the environment on), and the password is in no file, argv or tag."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import BIN, make_userproj
from tests.slurm.batches import show_json, states, wait_jobs

USER = "netrain-admin"
PASSWORD = "Zq7-not-in-any-file-4711"


def _env(**creds: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "NETRAIN_CONFIG")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(creds)
    return env


CREDS = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}


def _netrain(proj: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "netrain"), *args], cwd=proj, env=env,
                          capture_output=True, text=True, timeout=600)


def _argv_holding(secret: str) -> list[str]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if secret in argv:
            found.append(f"{pid}: {argv}")
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode(errors="replace").partition("=")[::2] for x in raw if b"=" in x)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_auth_server_refuses_strangers_and_takes_a_slurm_batch_once(tmp_path: Path) -> None:
    from netrain.track.server import free_port

    proj = make_userproj(tmp_path / "p", "executor: slurm\nlauncher: mlflow\n")
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        server = subprocess.Popen([str(BIN / "netrain"), "server", "--host", "0.0.0.0",
                                   "--port", str(port), "--auth"], cwd=proj, env=_env(**CREDS),
                                  stdout=subprocess.PIPE, stderr=err, text=True,
                                  start_new_session=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("tracking_uri: http://") and line.strip().endswith(f":{port}"), \
            log.read_text()[-3000:]
        # the URL as printed, by this machine's name, as the nodes would call it (MLflow's
        # own Host check takes only loopback and private addresses)
        url = line.split(": ", 1)[1].strip()
        cfg = proj / "netrain.yaml"
        cfg.write_text(cfg.read_text().replace("sqlite:///tracking/custom.db", url))
        # the user database beside the tracking store, its owner's only
        auth_db = proj / "tracking" / "basic_auth.db"  # beside tracking/custom.db
        assert auth_db.is_file() and auth_db.stat().st_mode & 0o777 == 0o600
        # the password is in no process's argv, and not in the auth app's config file
        assert _argv_holding(PASSWORD) == []
        mlflow_pids = [p for p in _descendants(server.pid) if p != server.pid]
        config = Path(_environ(mlflow_pids[0])["MLFLOW_AUTH_CONFIG_PATH"])
        assert config.is_file() and PASSWORD not in config.read_text()

        args = ("generate", "--models", "regressor.narrow=1", "--array", "2", "--nb-epoch", "2",
                "--epoch-samples", "64", "--no-check", "--run")
        for creds, word in (({}, "needs a user name and password"),
                            ({**CREDS, "MLFLOW_TRACKING_PASSWORD": "not-the-password"},
                             "wrong name or password")):
            p = _netrain(proj, *args, env=_env(**creds))
            assert p.returncode == 1, p.stdout + p.stderr
            assert len(p.stderr.splitlines()) == 1 and "401" in p.stderr and word in p.stderr, \
                p.stderr
            assert not any((proj / "runs").glob("2*")), "a refused generate left a batch"

        p = _netrain(proj, *args, env=_env(**CREDS))
        assert p.returncode == 0, p.stdout + p.stderr
        batch = Path(p.stdout.strip().splitlines()[0])
        wait_jobs(batch)
        assert states(show_json(proj, batch, env=CREDS)) == [["finished", "finished"]]
        again = _netrain(proj, "sync", batch.name, env=_env(**CREDS))
        assert again.returncode == 0 and "nothing to ship" in again.stdout, again.stderr

        os.environ.update(CREDS)
        try:
            from mlflow.tracking import MlflowClient

            c = MlflowClient(tracking_uri=url)
            runs = c.search_runs([c.get_experiment_by_name(batch.name).experiment_id])
        finally:
            for k in CREDS:
                os.environ.pop(k, None)
        # exactly once: one run per network and per task, each closed
        assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
        assert len({r.data.tags["netrain.key"] for r in runs}) == 4
        for r in runs:
            values = [*r.data.tags.values(), *r.data.params.values()]
            assert not any(PASSWORD in v for v in values)
        # no file of the batch holds the password: batch.yaml, scripts, logs, journals...
        files = [f for f in batch.rglob("*") if f.is_file()]
        assert len(files) > 20
        assert [f for f in files if PASSWORD.encode() in f.read_bytes()] == []
        assert [f for f in proj.rglob("*") if f.is_file()
                and PASSWORD.encode() in f.read_bytes()] == []
        assert PASSWORD not in log.read_text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
