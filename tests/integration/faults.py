"""Real faults for tests: a directory made read-only by a bind mount, a small tmpfs to
fill. Both need root (CI runs as root: there, NETRAIN_REQUIRE_SLURM=1, a missing root
fails the test instead of skipping it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def require_root() -> None:
    if os.geteuid() == 0:
        return
    why = "mounting a read-only or a small filesystem needs root"
    if os.environ.get("NETRAIN_REQUIRE_SLURM") == "1":
        pytest.fail(f"{why}, and CI (NETRAIN_REQUIRE_SLURM=1) runs as root")
    pytest.skip(why)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def umount(path: Path) -> None:
    for _ in range(50):  # busy while a process still has a file open there
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (a directory) read-only, even for root, until the block ends."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        umount(path)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` until the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        umount(path)


def wait_for(cond: Callable[[], object], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False
