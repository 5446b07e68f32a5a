"""`netrain server`: an MLflow tracking server for the trainings directory (lean settings,
artifacts proxied, loopback unless told), and its start-up check."""

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
from typing import Any
from urllib.parse import urlsplit

from netrain.errors import NetrainError

BACKENDS = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql",
            "mysql+pymysql")


def check_backend_uri(uri: str) -> None:
    """A backend store URI netrain will pass on: no password in it (credentials come from
    the environment: PGPASSWORD, ~/.pgpass, ...)."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise NetrainError(f"--backend-store-uri is not a valid URI ({exc})") from None
    if parts.scheme not in BACKENDS:
        raise NetrainError(f"--backend-store-uri {parts.scheme or uri!r} is not supported: "
                           "use sqlite:///path/mlflow.db or postgresql+psycopg2://user@host/db")
    if parts.password is not None:
        raise NetrainError("--backend-store-uri contains a password: remove it and export "
                           "PGPASSWORD (or use ~/.pgpass) instead")
    if parts.scheme == "postgresql":
        raise NetrainError("--backend-store-uri postgresql://... picks psycopg 3, which is not "
                           "installed: write postgresql+psycopg2://...")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def allowed_hosts(host: str, port: int) -> list[str]:
    """The Host headers a server bound to ``host`` answers. MLflow's own default takes
    loopback and private addresses only, so nodes that call the server by this machine's
    name (as the printed tracking_uri does) or by a public address would get 403: add those."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::", "[::]"):
        names.add(host)
    for name in list(names):
        with contextlib.suppress(OSError):
            names.update(socket.gethostbyname_ex(name)[2])
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # sends nothing: asks which address the default route uses
        names.add(s.getsockname()[0])
    out = list(get_default_allowed_hosts())
    for name in sorted(n for n in names if n):
        shown = f"[{name}]" if ":" in name else name
        out += [shown, f"{shown}:{port}"]
    return out


def server_command(backend_uri: str, artifacts_dir: Path, host: str, port: int,
                   workers: int, auth: bool = False) -> list[str]:
    """mlflow server's argv: never a credential in it (ps shows argv to every user)."""
    from netrain.track.server_auth import is_loopback

    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(artifacts_dir), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers),
            *([] if is_loopback(host) else ["--allowed-hosts", ",".join(allowed_hosts(host,
                                                                                      port))]),
            # MLflow's server and netrain's whole-run route (server_app.py)
            "--app-name", "netrain-auth" if auth else "netrain"]


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                "GIT_PYTHON_REFRESH": "quiet"})
    return env


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_healthy(url: str, proc: subprocess.Popen[Any] | None, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        if healthy(url):
            return True
        time.sleep(0.2)
    return False


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (Linux /proc)."""
    total = 0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
    return total / 1024


def _reap_group(pgid: int, grace: float = 10.0) -> None:
    """Wait for every process of the group to end; SIGKILL what is left after ``grace``."""
    end = time.monotonic() + grace
    sent_term = False
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > end:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
            return
        if not sent_term:
            sent_term = True
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGTERM)
        time.sleep(0.1)


def client_url(host: str, port: int) -> str:
    """The URL to give clients: a wildcard address is no address to them, the host name is."""
    if host in ("0.0.0.0", "::", "[::]"):
        host = socket.gethostname()
    return f"http://{host}:{port}"


def serve(backend_uri: str, artifacts_dir: Path, host: str, port: int, workers: int,
          say: Any, startup_timeout: float = 120.0, auth: Any = None) -> int:
    """Run the server in the foreground until it exits or we get SIGTERM/SIGINT. ``auth``:
    a server_auth.AuthSetup to run MLflow's basic-auth app with."""
    check_backend_uri(backend_uri)
    if backend_uri.startswith("sqlite:///"):
        from netrain.track.mlflow_store import initialise_sqlite

        Path(backend_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        initialise_sqlite(backend_uri)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as exc:
            raise NetrainError(f"cannot listen on {host}:{port} ({exc.strerror}): pick "
                               "another --port") from None
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{port}"
    started = time.monotonic()
    env = server_environment()
    if auth is not None:
        env.update(auth.environment())
    proc = subprocess.Popen(server_command(backend_uri, artifacts_dir, host, port, workers,
                                           auth=auth is not None),
                            env=env, start_new_session=True,
                            stdout=sys.stderr)  # our stdout: only the tracking_uri line

    def stop(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        if not wait_healthy(url, proc, startup_timeout):
            if proc.poll() is not None:
                raise NetrainError(f"mlflow server exited with code {proc.returncode} before "
                                   "it answered: see its messages above")
            raise NetrainError(f"mlflow server did not answer {url}/health within "
                               f"{startup_timeout:.0f} s: see its messages above")
        if auth is not None:
            from netrain.track.server_auth import check_admin

            check_admin(url, auth)
            say(f"netrain: basic auth on: admin {auth.creds.user!r}, users in {auth.db} "
                "(clients export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)")
        say(f"netrain: mlflow server ready in {time.monotonic() - started:.1f} s "
            f"({rss_mib(proc.pid):.0f} MiB RSS); put this line into netrain.yaml:")
        say(f"tracking_uri: {client_url(host, port)}")
        rc = proc.wait()
    finally:
        # Whatever ends us (an error, a closed terminal), the server goes with us, workers
        # included: a worker left behind would keep the port and leave clients hanging.
        if proc.poll() is None:
            stop(signal.SIGTERM, None)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _reap_group(proc.pid)
    if rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        return 0
    how = f"signal {-rc}" if rc < 0 else f"status {rc}"
    say(f"netrain: error: mlflow server ended with {how}: see its messages above")
    return 128 - rc if rc < 0 else rc
