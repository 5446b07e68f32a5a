"""One loader for the user's main script: the function it registers, or a clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netrain.define.loader import ScriptError, load_config_function, loading


def test_returns_the_function_given_to_netrain_run(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text("def configure(inputs):\n    return {'x': inputs}\n")
    main = tmp_path / "main.py"
    main.write_text("from models import configure\nfrom netrain import Netrain\n"
                    "Netrain(configure).run()\n")
    path_before = list(sys.path)
    fn = load_config_function(main, ["--class", "a"])
    assert fn({"k": 1}) == {"x": {"k": 1}}
    assert not loading()
    assert sys.path == path_before


def test_a_script_that_never_calls_run_is_named(tmp_path: Path) -> None:
    main = tmp_path / "main.py"
    main.write_text("x = 1\n")
    with pytest.raises(ScriptError, match=r"main.py never calls Netrain"):
        load_config_function(main)


def test_a_missing_script_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="does not exist"):
        load_config_function(tmp_path / "nope.py")


def test_errors_of_the_script_propagate(tmp_path: Path) -> None:
    main = tmp_path / "main.py"
    main.write_text("raise ValueError('boom')\n")
    with pytest.raises(ValueError, match="boom"):
        load_config_function(main)
    assert not loading()
