"""Every NETRAIN_* variable netrain reads or sets is named once, in netrain/env.py, and the
code uses those constants, never the literal names; the user-facing ones are in the
README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from netrain import env

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bNETRAIN_[A-Z_]+\b")


def declared() -> set[str]:
    return {v for k, v in vars(env).items() if k.isupper() and isinstance(v, str)}


def test_every_variable_used_is_declared() -> None:
    used = {m for p in [*(ROOT / "netrain").rglob("*.py"), *(ROOT / "mlproject").rglob("*.py")]
            for m in NAME.findall(p.read_text(encoding="utf-8"))}
    assert used, "the scan found no variable at all"
    assert used - declared() == set()


def test_user_facing_variables_are_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert set(env.USER_FACING) <= declared()
    assert [v for v in env.USER_FACING if v not in readme] == []


#: Files that may write the names as text, and why.
SPELLED_OUT = {
    # runs on a compute node as a plain script, without netrain's modules
    "netrain/execute/nodeprobe.py",
    # shell text (export, ${NAME:-default}), pinned by tests/golden/*.sh
    "netrain/define/scripts.py",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the module's, classes' and functions' docstring nodes (prose may name a
    variable)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def literal_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of every NETRAIN_* name written in a string of the code (f-strings
    included), docstrings left out."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [(node.lineno, name) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip for name in NAME.findall(node.value)]


def test_the_code_uses_the_constants_not_the_names() -> None:
    files = [p for base in ("netrain", "mlproject") for p in sorted((ROOT / base).rglob("*.py"))]
    found = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in files
             if p.relative_to(ROOT).as_posix() not in {"netrain/env.py", *SPELLED_OUT}
             for line, name in literal_names(p.read_text(encoding="utf-8"))]
    assert found == [], "use netrain.env's constant instead:\n" + "\n".join(found)
    # an exception no longer needed is dropped from the list
    assert all(literal_names((ROOT / p).read_text(encoding="utf-8")) for p in SPELLED_OUT)


def test_the_check_sees_a_literal() -> None:
    code = '''"""Reads NETRAIN_CONFIG (a docstring may say so)."""
import os
def f():
    """NETRAIN_LOG too."""
    return os.environ.get("NETRAIN_LOG"), f"{1}NETRAIN_RERUN=1"  # NETRAIN_DEBUG
'''
    assert [n for _, n in literal_names(code)] == ["NETRAIN_LOG", "NETRAIN_RERUN"]
