"""The test suite's own shape, read from its source: helpers that several test modules share
live under public names (in a helper module or a conftest), so no test module imports
another one's private names."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def private_test_imports(path: Path) -> list[str]:
    """``from tests.x import _name`` in ``path``."""
    where = path.relative_to(TESTS.parent) if path.is_relative_to(TESTS.parent) else path
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
            out += [f"{where}: from {node.module} import {a.name}"
                    for a in node.names if a.name.startswith("_")]
    return out


def test_no_test_module_imports_another_ones_private_names(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from tests.slurm.test_slurm import _jobs, generate\n")
    assert private_test_imports(probe) == [f"{probe}: from tests.slurm.test_slurm import _jobs"]
    assert [f for p in sorted(TESTS.rglob("*.py")) for f in private_test_imports(p)] == []
