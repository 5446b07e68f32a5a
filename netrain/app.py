"""The user's API: ``Netrain(model_configuration_function).run()`` in netrain_main.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Set by the batch entry point (task.run_entry) before it runs the user's main script.
PENDING_TASK: Any = None
#: The exit status of the last task run through the entry point.
LAST_EXIT = 0
#: Apps created while generate checks the configuration (NETRAIN_PROBE=1).
PROBED: list[Netrain] = []


class Netrain:
    """A netrain application around one model configuration function.

    ``run()`` trains the networks of the array task described by the command line (or by
    the batch entry point); under ``netrain generate``'s check it only registers itself.
    """

    def __init__(self, model_configuration_function: Callable[[dict[str, Any]], Any]) -> None:
        if not callable(model_configuration_function):
            raise TypeError("Netrain(...) takes the model configuration function itself, "
                            f"got {type(model_configuration_function).__name__}")
        self.config_fn = model_configuration_function

    def run(self, argv: list[str] | None = None) -> None:
        global PENDING_TASK, LAST_EXIT
        if os.environ.get("NETRAIN_PROBE") == "1":
            PROBED.append(self)
            return
        from netrain.task import TaskRunner, parse_task_args

        if PENDING_TASK is not None:
            args, batch_dir = PENDING_TASK
            PENDING_TASK = None
        else:
            args = parse_task_args(sys.argv[1:] if argv is None else argv)
            env_dir = os.environ.get("NETRAIN_BATCH_DIR")
            if not env_dir:
                raise SystemExit("netrain: NETRAIN_BATCH_DIR is not set: run tasks through the "
                                 "batch's scripts (netrain run / sbatch), not by hand")
            batch_dir = Path(env_dir)
        code = TaskRunner(self.config_fn, args, batch_dir).run()
        LAST_EXIT = code
        if code:
            raise SystemExit(code)
