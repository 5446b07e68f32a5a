"""Starting and stopping MLflow's web UI on a project's tracking store."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from netrain.errors import NetrainError


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


#: mlflow ui 3.17 opens every experiment on an empty GenAI overview in a fresh browser; this
#: URL parameter switches it to "Model training", which opens an experiment on its runs.
ML_VIEW = "workflowType=machine_learning"


def url(base: str, experiment_id: str | None) -> str:
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}"
    return f"{base}/#/experiments?{ML_VIEW}"


def command(uri: str, trainings_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The mlflow ui command line and environment: one worker, no job runner, no telemetry,
    127.0.0.1 only; new artifacts (none from netrain) would go under the trainings dir."""
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--artifacts-destination", str(Path(trainings_dir) / "mlartifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = dict(os.environ)
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true"})
    return argv, env


def check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise NetrainError(f"port {port} on 127.0.0.1 is in use: pass another one with "
                               "--port") from None


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own process group, so stopping it stops its worker too.
    # Its messages go to stderr: stdout carries only the URL.
    return subprocess.Popen(argv, env=env, start_new_session=True, stdout=sys.stderr)


def wait_healthy(proc: subprocess.Popen[bytes], base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NetrainError(f"mlflow ui exited with status {proc.returncode} before it "
                               "answered (see its messages above)")
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(base + "/health", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise NetrainError(f"mlflow ui did not answer on {base} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
