"""The real local SLURM cluster (scripts/slurm-cluster.sh). Tests here skip without it on a
developer machine and fail without it when NETRAIN_REQUIRE_SLURM=1 (CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_userproj

START_HINT = ("start the local test cluster first: sudo bash scripts/slurm-cluster.sh install "
              "&& eval \"$(sudo bash scripts/slurm-cluster.sh start)\" (or run "
              "scripts/run-tests.sh as root)")


def _cluster_up() -> str | None:
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set"
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or not p.stdout.strip():
        return f"sinfo failed: {p.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    problem = _cluster_up()
    if problem:
        if os.environ.get("NETRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM tests are mandatory here but the cluster is not up ({problem})")
        pytest.skip(f"no local SLURM cluster ({problem}): {START_HINT}")
    return os.environ["SLURM_CONF"]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A user project whose batches go to SLURM."""
    return make_userproj(tmp_path / "p", "executor: slurm\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/slurm/" in str(item.fspath):
            item.add_marker(pytest.mark.slurm)
            item.fixturenames.insert(0, "slurm_cluster")
