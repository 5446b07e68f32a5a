"""The user's API: ``Netrain(model_configuration_function).run()`` in netrain_main.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netrain import env as names
from netrain.define import loader


class Netrain:
    """A netrain application around one model configuration function.

    When netrain loads the main script (a task, or generate's check), ``run()`` only hands
    the function to netrain's loader. Run by hand inside a batch (``NETRAIN_BATCH_DIR``
    set), it trains the array task its command line names.
    """

    def __init__(self, model_configuration_function: Callable[[dict[str, Any]], Any]) -> None:
        if not callable(model_configuration_function):
            raise TypeError("Netrain(...) takes the model configuration function itself, "
                            f"got {type(model_configuration_function).__name__}")
        self.config_fn = model_configuration_function

    def run(self, argv: list[str] | None = None) -> None:
        if loader.loading():
            loader.register(self.config_fn)
            return
        from netrain.train.task import TaskRunner, parse_task_args

        args = parse_task_args(sys.argv[1:] if argv is None else argv)
        env_dir = os.environ.get(names.BATCH_DIR)
        if not env_dir:
            raise SystemExit(f"netrain: {names.BATCH_DIR} is not set: run tasks through the "
                             "batch's scripts (netrain run / sbatch), not by hand")
        code = TaskRunner(self.config_fn, args, Path(env_dir)).run()
        if code:
            raise SystemExit(code)
