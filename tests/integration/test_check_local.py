"""netrain check with the local executor, and the local executor's hint when a batch's first
tasks all fail alike (a task Python without netrain: nothing imports TensorFlow, so quick)."""

from __future__ import annotations

import venv
from pathlib import Path

from tests.conftest import invoke, make_userproj


def _bare_proj(tmp_path: Path) -> tuple[Path, Path]:
    venv.EnvBuilder(with_pip=False).create(tmp_path / "bare")
    python = tmp_path / "bare" / "bin" / "python"
    proj = make_userproj(tmp_path / "p", f"environments:\n  cpu: python:{python}\n")
    return proj, python


def test_local_check_fails_on_the_netrain_line(tmp_path: Path) -> None:
    proj, python = _bare_proj(tmp_path)
    r = invoke("check", "--executor", "local", cwd=proj, env={"PYTHONPATH": None})
    assert r.code == 1, r.text
    lines = r.out.splitlines()
    row = next(i for i, x in enumerate(lines) if x.startswith("netrain ") and "FAIL" in x)
    assert "FAIL" in lines[row] and f"{python} -m pip install netrain" in lines[row + 1]
    assert not any(x.startswith("job ") for x in lines)  # no SLURM rows here
    assert "1 check(s) failed" in r.out or "2 check(s) failed" in r.out  # netrain (+ keras)


def test_local_run_suggests_check_when_the_first_tasks_fail_alike(tmp_path: Path) -> None:
    proj, _ = _bare_proj(tmp_path)
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "3", "--nb-epoch", "1",
               "--epoch-samples", "64", "--no-check", "--run", "--executor", "local",
               cwd=proj, env={"PYTHONPATH": None})
    assert r.code == 1, r.text
    assert "the first 3 task(s) all failed the same way" in r.err, r.err
    assert "No module named 'netrain'" in r.err and "run netrain check" in r.err
