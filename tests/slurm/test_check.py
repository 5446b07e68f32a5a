"""netrain check on the real SLURM cluster: it passes on a working set-up, and fails on the
right line (with its fix) for a task Python without netrain and for a trainings directory the
job cannot write; generate --run points to it when the first tasks all fail alike."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, invoke, make_userproj


def rows(text: str) -> dict[str, tuple[str, str]]:
    """{check: (RESULT, the row)} from the table, and each row's fix under the key 'fix:NAME'."""
    out: dict[str, tuple[str, str]] = {}
    last = ""
    for line in text.splitlines():
        if line.startswith("  fix: ") and last:
            out[f"fix:{last}"] = ("", line)
            continue
        parts = line.split("  ")
        words = [p.strip() for p in parts if p.strip()]
        if len(words) >= 2 and words[1] in ("ok", "FAIL", "warn", "-"):
            last = words[0]
            out[last] = (words[1], line)
    return out


def bare_python(where: Path) -> Path:
    """A Python with nothing installed (no netrain, no keras)."""
    venv.EnvBuilder(with_pip=False).create(where)
    return where / "bin" / "python"


def test_check_passes_on_the_cluster(tmp_path: Path) -> None:
    proj = make_userproj(tmp_path / "p", "executor: slurm\n")
    r = invoke("check", "--models", "regressor.narrow=1", "--array", "10", cwd=proj)
    assert r.code == 0, r.text
    table = rows(r.out)
    assert set(table) >= {"job", "python", "netrain", "keras", "trainings_dir", "tracking",
                          "models", "sbatch options", "requeue", "signal", "array"}, r.out
    assert {k: v[0] for k, v in table.items()} == dict.fromkeys(table, "ok"), r.out
    assert "ran on" in table["job"][1] and "the same directory, writable" in r.out
    assert "MaxArraySize" in table["array"][1] and "--array 10" in table["array"][1]
    assert "every check passed" in r.out
    assert not list((proj / "runs").glob(".netrain-check*"))  # it cleans up after itself


def test_check_fails_on_a_task_python_without_netrain(tmp_path: Path) -> None:
    python = bare_python(tmp_path / "bare")
    proj = make_userproj(tmp_path / "p", f"executor: slurm\nenvironments:\n  cpu: "
                                         f"python:{python}\n")
    r = invoke("check", cwd=proj, env={"PYTHONPATH": None})
    assert r.code == 1, r.text
    table = rows(r.out)
    assert table["job"][0] == "ok" and table["python"][0] == "ok", r.out
    assert table["netrain"][0] == "FAIL" and "No module named 'netrain'" in table["netrain"][1]
    assert f"{python} -m pip install netrain==" in table["fix:netrain"][1], r.out
    assert "environments.cpu" in table["fix:netrain"][1]
    assert table["trainings_dir"][0] == "ok" and table["sbatch options"][0] == "ok"


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[list[str]]:
    """Make ``directory`` one the job cannot write, and give the command prefix to run netrain
    with: root cannot write an immutable directory (chattr +i); where that is not supported,
    netrain-ci runs the check against a directory root owns."""
    directory.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if p.returncode == 0:
        try:
            yield [str(BIN / "netrain")]
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        return
    try:
        pwd.getpwnam("netrain-ci")
    except KeyError:
        pytest.fail(f"chattr +i failed ({p.stderr.strip()}) and user netrain-ci is missing: "
                    "scripts/slurm-cluster.sh install creates it")
    directory.chmod(0o755)
    for d in [directory.parent, *directory.parent.parents]:
        if d.stat().st_uid == 0 and d.stat().st_mode & 0o005 != 0o005:
            d.chmod(d.stat().st_mode | 0o005)  # netrain-ci must read the project
    python = Path(sys.executable)
    yield ["runuser", "-u", "netrain-ci", "--", "env", f"PATH={python.parent}:/usr/bin:/bin",
           f"SLURM_CONF={os.environ['SLURM_CONF']}", "HOME=/tmp",
           str(python.parent / "netrain")]


def test_check_fails_on_a_trainings_dir_the_job_cannot_write(tmp_path: Path) -> None:
    proj = make_userproj(tmp_path / "p", "executor: slurm\n")
    runs = proj / "runs"
    with unwritable(runs) as netrain:
        p = subprocess.run([*netrain, "check"], cwd=proj, capture_output=True, text=True,
                           timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    table = rows(p.stdout)
    assert table["trainings_dir"][0] == "FAIL", p.stdout
    assert "not writable" in table["trainings_dir"][1]
    assert "make it writable" in table["fix:trainings_dir"][1]
    assert all(table[k][0] == "ok" for k in ("job", "python", "netrain", "keras")), p.stdout
    shutil.rmtree(proj, ignore_errors=True)


def test_generate_run_suggests_check_when_the_first_tasks_fail_alike(tmp_path: Path) -> None:
    python = bare_python(tmp_path / "bare")
    proj = make_userproj(tmp_path / "p", f"executor: slurm\nenvironments:\n  cpu: "
                                         f"python:{python}\n")
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "3", "--nb-epoch", "1",
               "--epoch-samples", "64", "--no-check", "--run", cwd=proj,
               env={"PYTHONPATH": None, "NETRAIN_WATCH_FIRST": "120"})
    assert r.code == 0, r.text
    assert "the first 3 task(s) all failed the same way" in r.err, r.err
    assert "No module named 'netrain'" in r.err and "run netrain check" in r.err
