"""Every NETRAIN_* variable netrain reads or sets is named once, in netrain/env.py; the
user-facing ones are in the README."""

from __future__ import annotations

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
