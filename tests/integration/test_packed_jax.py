"""The packed trainer on Keras' jax backend (a GPU node's Keras may run on JAX, without
TensorFlow): every test marked ``jax_too`` (the equivalence, early stopping and resume tests
of test_packed and test_packed_resume: a selection, they take minutes) is run again in a
process whose KERAS_BACKEND is jax. Keras fixes its backend once per process, hence the
second pytest. To have a test rerun there, mark it ``@pytest.mark.jax_too`` (or one
parameter set, with ``pytest.param(..., marks=pytest.mark.jax_too)``); nothing here names it.

The rerun must run exactly the tests that collecting the same files here selects, each one
passing: a marked test that is skipped, deselected or missing under jax fails this test.

Not rerun there: the custom train_step fallback (the test's model calls tensorflow's
train_step signature) and the variable-count guard (on jax every trainable variable gets a
gradient, zero where none reaches it, which is what keras' own jax trainer applies too)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MARKER = "jax_too"
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
          "--strict-markers", "-m", MARKER]


def marked_files() -> list[str]:
    """The test files that can hold a marked test: those that name the marker (a test's
    marker is written in its own file; reading the text costs far less than collecting the
    whole suite, which imports TensorFlow)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if p.name != Path(__file__).name and MARKER in p.read_text(encoding="utf-8"))


def collected(files: list[str], env: dict[str, str]) -> set[str]:
    """The node ids that pytest selects with the marker from ``files``."""
    p = subprocess.run([*PYTEST, "--collect-only", "-q", *files], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 5), p.stdout[-3000:] + p.stderr[-2000:]  # 5: none selected
    if p.returncode == 5:
        return set()
    ids = p.stdout.split("\n\n", 1)[0].splitlines()  # the ids, then a blank line, the count
    assert all("::" in i for i in ids), p.stdout[-3000:]
    return set(ids)


def junit_node_id(case: ET.Element) -> str:
    """A junit testcase's pytest node id (classname is the module path, dotted, then any
    test classes)."""
    parts = case.get("classname", "").split(".")
    for i in range(len(parts), 0, -1):
        path = ROOT.joinpath(*parts[:i]).with_suffix(".py")
        if path.is_file():
            return "::".join(["/".join(parts[:i]) + ".py", *parts[i:], case.get("name", "")])
    return f"{case.get('classname')}::{case.get('name')}"


def test_packed_trainer_on_the_jax_backend(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KERAS_BACKEND", None)
    files = marked_files()
    expected = collected(files, env)
    assert expected, f"no test is marked {MARKER} in {files}"
    report = tmp_path / "jax.xml"
    jax = {**env, "KERAS_BACKEND": "jax"}
    p = subprocess.run([*PYTEST, "-q", "--basetemp", str(tmp_path / "t"),
                        "--junitxml", str(report), *files],
                       cwd=ROOT, env=jax, capture_output=True, text=True, timeout=1500)
    tail = p.stdout[-3000:] + p.stderr[-2000:]
    assert p.returncode == 0, tail
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        bad = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        outcomes[junit_node_id(case)] = bad[0] if bad else "passed"
    assert set(outcomes) == expected, (sorted(set(outcomes) ^ expected), tail)
    assert set(outcomes.values()) == {"passed"}, (outcomes, tail)
