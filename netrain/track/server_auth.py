"""`netrain server --auth`: MLflow's basic-auth app with the starting user as its admin,
credentials only ever in the environment, and the rule that a server on the network has it."""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from netrain.errors import NetrainError, UsageError

USER_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"
AUTH_DB_NAME = "basic_auth.db"
#: MLflow refuses shorter passwords when it creates a user (its password policy).
MIN_PASSWORD = 12


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it resolves to something reachable from elsewhere


def check_exposure(host: str, auth: bool, insecure: bool) -> None:
    """A server others can reach must authenticate, unless the user says otherwise."""
    if is_loopback(host) or auth or insecure:
        return
    raise UsageError(
        f"--host {host} lets anyone who can reach this machine read, change and delete every "
        f"run: add --auth (with {USER_VAR} and {PASSWORD_VAR} exported), or --insecure if "
        "the network is yours alone")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def credentials_from_environment() -> Credentials:
    """The admin's name and password, from the variables every MLflow client reads."""
    user = os.environ.get(USER_VAR, "")
    password = os.environ.get(PASSWORD_VAR, "")
    if not user or not password:
        missing = " and ".join(v for v, x in ((USER_VAR, user), (PASSWORD_VAR, password))
                               if not x)
        raise UsageError(
            f"--auth needs {missing} in the environment (never on the command line): "
            f"export {USER_VAR}=$USER; read -rs {PASSWORD_VAR}; export {PASSWORD_VAR}")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"{PASSWORD_VAR} is shorter than {MIN_PASSWORD} characters, which "
                         "MLflow's basic-auth app refuses: export a longer one")
    return Credentials(user, password)


def auth_db_path(backend_uri: str, trainings: Path) -> Path:
    """The user database sits beside the tracking store: the SQLite file's directory, or the
    trainings directory for a database server."""
    if backend_uri.startswith("sqlite:///"):
        return Path(backend_uri[len("sqlite:///"):]).resolve().parent / AUTH_DB_NAME
    return trainings.resolve() / AUTH_DB_NAME


def private_file(path: Path) -> None:
    """Create ``path`` (if absent) readable and writable by its owner only, or make it so:
    SQLite gives its journal and WAL files the mode of the database file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class AuthSetup:
    """The files and variables the basic-auth app reads. The config file holds no secret
    (the admin's name and password go to the server through its environment only), and is
    removed with ``close``."""

    def __init__(self, creds: Credentials, db: Path) -> None:
        self.creds, self.db = creds, db
        private_file(db)
        self._dir = tempfile.TemporaryDirectory(prefix="netrain-auth-")
        self.config = Path(self._dir.name) / "basic_auth.ini"
        # NO_PERMISSIONS: a user the admin adds later sees nothing until granted.
        self.config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                               f"database_uri = sqlite:///{db}\n"
                               "authorization_function = "
                               "mlflow.server.auth:authenticate_request_basic_auth\n",
                               encoding="utf-8")

    def environment(self) -> dict[str, str]:
        return {"MLFLOW_AUTH_CONFIG_PATH": str(self.config),
                "MLFLOW_AUTH_ADMIN_USERNAME": self.creds.user,
                "MLFLOW_AUTH_ADMIN_PASSWORD": self.creds.password,
                # one key for every worker (CSRF); new at each start, never written down
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}

    def close(self) -> None:
        self._dir.cleanup()


def probe(url: str, creds: Credentials | None, timeout: float = 10.0) -> int:
    """The HTTP status of an authenticated (or anonymous) call that any admin may make."""
    req = urllib.request.Request(
        url.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    if creds is not None:
        token = base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def check_admin(url: str, setup: AuthSetup) -> None:
    """The started server takes the admin's credentials and refuses a caller without any."""
    anonymous = probe(url, None)
    if anonymous != 401:
        raise NetrainError(f"the server at {url} answered {anonymous} to a call without "
                           "credentials, not 401: it is not authenticating; stopped it")
    status = probe(url, setup.creds)
    if status == 401:
        raise NetrainError(
            f"{setup.db} already holds user {setup.creds.user!r} with another password: "
            f"export the password it was created with as {PASSWORD_VAR}, or move {setup.db} "
            "away to start with a new user database")
    if status != 200:
        raise NetrainError(f"the server at {url} answered {status} to the admin "
                           f"{setup.creds.user!r}: see its messages above")


def shown(uri: str) -> str:
    """A tracking URI as netrain prints it: scheme, host, port and path, never credentials."""
    from urllib.parse import urlsplit

    if uri.startswith("sqlite:"):
        return uri
    p = urlsplit(uri)
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{p.hostname or ''}{port}{p.path}"


def refusal(uri: str, shown: str) -> str | None:
    """Why the tracking server at ``uri`` refuses this process's credentials (from the
    environment), as one line with the fix; None when it lets us in (or has no auth)."""
    user = os.environ.get(USER_VAR, "")
    password = os.environ.get(PASSWORD_VAR, "")
    creds = Credentials(user, password) if user and password else None
    try:
        status = probe(uri, creds, timeout=10.0)
    except OSError:
        return None  # reachability is reported elsewhere
    if status == 401 and creds is None:
        return (f"tracking server {shown} refused netrain (401: it needs a user name and "
                f"password): export {USER_VAR} and {PASSWORD_VAR}")
    if status == 401:
        return (f"tracking server {shown} refused user {user!r} (401: wrong name or password):"
                f" export the right {USER_VAR} and {PASSWORD_VAR}")
    if status == 403:
        return (f"tracking server {shown} lets user {user!r} in but not at the experiments "
                "(403): ask the server's admin for permission, or use the admin's account")
    return None
