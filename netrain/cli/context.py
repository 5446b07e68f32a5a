"""The per-invocation state every command gets (click's ``obj``): the config, found and loaded
on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Context:
    """Per-invocation state: where the config is, loaded on first use."""

    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self._config: Any = None

    def config(self, required: bool = True) -> Any:
        from netrain.define.config import load_config

        if self._config is None:
            self._config = load_config(self.config_path, required=required)
        return self._config

    def trainings_dir(self) -> Path | None:
        from netrain.define.config import find_config

        if self.config_path or find_config() is not None:
            return Path(self.config().trainings_dir)
        return None
