"""Shared fixtures: CLI invocation, example and user projects, MLflow access."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests run beside training tests (two xdist workers on two cores): no per-example
# deadline, which a loaded machine would break, not the code.
settings.register_profile("netrain", deadline=None)
settings.load_profile("netrain")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = Path(sys.executable).parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 900) -> Result:
    """Run the real `netrain` console script (as a user would), in ``cwd``."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{BIN}:{full_env.get('PATH', '')}"
    full_env.pop("NETRAIN_CONFIG", None)
    if env:
        full_env.update(env)
    p = subprocess.run([str(BIN / "netrain"), *args], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def invoke(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> Result:
    """Run `netrain` in this process with click's CliRunner, in ``cwd`` (for everything that
    needs no real process of its own: signals, SLURM and training tasks do). An exception
    that escapes the command shows up as a traceback on stderr, as it would for a user."""
    import traceback

    from click.testing import CliRunner

    from netrain.cli import cli as netrain_cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(netrain_cli, list(args), prog_name="netrain",
                               env={"NETRAIN_CONFIG": None, **(env or {})})
    finally:
        os.chdir(old)
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "".join(traceback.format_exception(r.exception))
    return Result(r.exit_code, r.stdout, err)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


def make_userproj(dest: Path, extra_yaml: str = "") -> Path:
    """A copy of tests/fixtures/userproj with a netrain.yaml using other paths and names."""
    shutil.copytree(FIXTURES / "userproj", dest)
    (dest / "netrain.yaml").write_text(
        "trainings_dir: runs\n"
        "main_script: src/main.py\n"
        "tracking_uri: sqlite:///tracking/custom.db\n"
        "launcher: direct\n"
        "workers: 2\n" + extra_yaml
    )
    (dest / "tracking").mkdir()
    return dest


@pytest.fixture
def userproj(tmp_path: Path) -> Path:
    return make_userproj(tmp_path / "userproj")


def mlflow_client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def wait_until_training(record: Path, timeout: float) -> bool:
    """Wait until the task's record says its first network is training."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and json.loads(record.read_text())["nets"].get("0", {}).get(
                "state") == "running":
            return True
        time.sleep(0.5)
    return False


def snapshot_tree(path: Path) -> dict[str, tuple[int, float]]:
    """Every file under ``path`` with its size and mtime (to prove nothing changed)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime)
            for p in path.rglob("*") if p.is_file()}


def pytest_xdist_make_scheduler(config: Any, log: Any) -> Any:
    """With pytest-xdist (``-n 2``, as scripts/run-tests.sh runs the suite), each test
    module runs on one worker (its module fixtures are built once), and all the SLURM tests
    on the same one, one at a time, as on a real cluster's queue."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/slurm/"):
                return "tests/slurm"
            return nodeid.split("::", 1)[0]

    return ByModule(config, log)
