"""Shared fixtures of the hostile-input tests: one generated template project, copied per
test, and a before/after picture of a project that proves nothing was written."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Result, invoke, make_userproj, run_cli, snapshot_tree

#: The database make_userproj's netrain.yaml names (relative to the project).
DB = Path("tracking") / "custom.db"
#: netrain.yaml of make_userproj, to rewrite with one change.
BASE_YAML = ("trainings_dir: runs\n"
             "main_script: src/main.py\n"
             "tracking_uri: sqlite:///tracking/custom.db\n"
             "launcher: direct\n"
             "workers: 2\n")
#: The user's shell must not steer the tests (run_cli already drops NETRAIN_CONFIG).
CLEAN_ENV = {"NETRAIN_TRAININGS_DIR": "", "NETRAIN_TRACKING_URI": ""}


def nr(*args: str, cwd: Path, env: dict[str, str] | None = None,
       timeout: float = 120) -> Result:
    """Run the real `netrain` console script with a clean netrain environment."""
    return run_cli(*args, cwd=cwd, env={**CLEAN_ENV, **(env or {})}, timeout=timeout)


def ni(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """Run `netrain` in this process (CliRunner) with a clean netrain environment."""
    return invoke(*args, cwd=cwd, env={**CLEAN_ENV, **(env or {})})


@dataclass(frozen=True)
class Template:
    path: Path
    batch: str
    #: picture() of the template right after it was made.
    before: dict[str, object]


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """make_userproj with one generated batch (so that the database exists)."""
    proj = make_userproj(tmp_path_factory.mktemp("hostile") / "template")
    r = ni("generate", "--models", "regressor.narrow=1", "--no-check", "--desc", "template",
           cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    return Template(proj, batch.name, picture(proj))


@pytest.fixture
def proj(template: Template, tmp_path: Path) -> Path:
    """A private copy of the template project (mtimes kept, so snapshots compare)."""
    dest = tmp_path / "proj"
    shutil.copytree(template.path, dest, symlinks=True)
    return dest


def picture(path: Path) -> dict[str, object]:
    """Everything that must not change: every file (size, mtime and bytes), every directory
    and link, and the database (bytes and mtime in nanoseconds)."""
    entries = sorted(str(p.relative_to(path)) + ("/" if p.is_dir() else "")
                     for p in path.rglob("*")) if path.exists() else []
    db = path / DB
    return {
        "files": snapshot_tree(path),
        "bytes": {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in path.rglob("*") if p.is_file() and not p.is_symlink()},
        "entries": entries,
        "db": hashlib.sha256(db.read_bytes()).hexdigest() if db.is_file() else None,
        "db_mtime": db.stat().st_mtime_ns if db.is_file() else None,
    }


def assert_unchanged(before: dict[str, object], after: dict[str, object]) -> None:
    assert before["db"] == after["db"] and before["db_mtime"] == after["db_mtime"], \
        "the MLflow database changed"
    b, a = set(before["entries"]), set(after["entries"])  # type: ignore[call-overload]
    assert a == b, f"added {sorted(a - b)}, removed {sorted(b - a)}"
    assert before["files"] == after["files"], "a file's size or mtime changed"
    assert before["bytes"] == after["bytes"], "a file's content changed"


def assert_one_line_error(r: Result, code: int | tuple[int, ...] = (1, 2)) -> str:
    """The failure shape every bad input must have; returns the message."""
    codes = (code,) if isinstance(code, int) else code
    assert r.code in codes, f"exit {r.code}, expected {codes}: {r.text}"
    assert "Traceback" not in r.text, r.text
    lines = r.err.splitlines()
    assert len(lines) == 1, f"stderr should be one line, got {len(lines)}: {r.err!r}"
    assert lines[0].startswith("netrain: error: "), lines[0]
    assert r.out == "", r.out
    return lines[0]


#: Hostile inputs say ``touch PWNED`` (or PWNED2, PWNED3): a file of that name means a value
#: was executed.
MARKERS = ("PWNED", "PWNED2", "PWNED3")


def no_marker_files(*roots: Path) -> None:
    for root in roots:
        found = [p for p in root.rglob("PWNED*") if p.name in MARKERS] if root.exists() else []
        assert not found, f"hostile input was executed: {found}"
