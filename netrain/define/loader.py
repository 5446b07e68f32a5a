"""Loads the user's main script and returns the model configuration function it registers
with ``Netrain(fn).run()``: the one way both generate's check and a task read user code."""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netrain import env as names

ConfigFunction = Callable[[dict[str, Any]], Any]


class ScriptError(Exception):
    """The main script could not be loaded, or never called ``Netrain(...).run()``."""


class _Loading:
    """While a script is being loaded, ``Netrain.run()`` hands its function here."""

    def __init__(self) -> None:
        self.functions: list[ConfigFunction] = []


_ACTIVE: list[_Loading] = []


def loading() -> bool:
    """True while :func:`load_config_function` runs a main script."""
    return bool(_ACTIVE)


def register(fn: ConfigFunction) -> None:
    """Called by ``Netrain.run()`` during loading: remember the configuration function."""
    _ACTIVE[-1].functions.append(fn)


@contextmanager
def _script_context(main: Path, argv: list[str]) -> Iterator[None]:
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    sys.argv = [str(main), *argv]
    sys.path.insert(0, str(main.parent))
    try:
        yield
    finally:
        sys.argv = saved_argv
        # keep what the script appended (its own imports may need it later), drop our entry
        if sys.path and sys.path[0] == str(main.parent) and saved_path[:1] != sys.path[:1]:
            sys.path.pop(0)


def load_config_function(main: Path, argv: list[str] | None = None) -> ConfigFunction:
    """Run ``main`` as ``__main__`` and return the function its ``Netrain(fn).run()`` names.

    Raises :class:`ScriptError` when the script is missing or never calls ``run()``; any
    exception of the script itself propagates (callers word it for their user).
    """
    if not main.is_file():
        raise ScriptError(f"main script {main} does not exist")
    state = _Loading()
    _ACTIVE.append(state)
    try:
        with _script_context(main, argv or []):
            try:
                runpy.run_path(str(main), run_name="__main__")
            except SystemExit as exc:
                if exc.code not in (None, 0) and not state.functions:
                    raise ScriptError(f"main script {main.name} exited with code {exc.code} "
                                      "while loading: remove the exit, end the script with "
                                      "Netrain(model_configuration_function).run()") from None
    finally:
        _ACTIVE.pop()
    if not state.functions:
        raise ScriptError(f"main script {main.name} never calls "
                          "Netrain(model_configuration_function).run(): add those lines")
    return state.functions[-1]


def batch_environment(batch_dir: Path) -> None:
    """What a task's user code may read about its batch."""
    os.environ[names.BATCH_DIR] = str(batch_dir)
