"""The task's parameters, listed once (for the sbatch scripts, the MLproject, the task's
command line and the contract), and the one parser of true/false words. Pure data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskParam:
    """One parameter of the batch's entry point (``--<name>`` on the task's command line)."""

    name: str  # as the seed spells it: nb_epoch, trainingrun, ...
    type: type  # int, str or bool
    #: The text default of an optional parameter ("none" stands for empty, because MLflow
    #: treats "" as missing); None for a required one.
    default: str | None = None
    #: Also a key of the configuration function's input dictionary.
    input_key: bool = True


#: In the order the command lines pass them.
TASK_PARAMS = (
    TaskParam("class", str),
    TaskParam("architecture", str),
    TaskParam("nb_epoch", int),
    TaskParam("epoch_samples", int),
    TaskParam("nnets", int),
    TaskParam("intelligent", bool),
    TaskParam("trainingrun", int),
    TaskParam("net_index", int, "-1"),
    TaskParam("retrain_of", str, "none"),
    TaskParam("from_weights", str, "none", input_key=False),
    TaskParam("pack", bool, "false", input_key=False),
)
TASK_PARAM_NAMES = tuple(p.name for p in TASK_PARAMS)
#: Default of the optional parameters.
OPTIONAL_DEFAULTS = {p.name: p.default for p in TASK_PARAMS if p.default is not None}

#: The words click.BOOL accepts, so the CLI and the task agree on ``--intelligent``
#: (an empty value is false, as for click).
TRUE_WORDS = ("1", "true", "t", "yes", "y", "on")
FALSE_WORDS = ("0", "false", "f", "no", "n", "off", "")


def parse_bool(value: str | bool) -> bool:
    """``true``/``yes``/``1``/... -> True, ``false``/``no``/``0``/""/... -> False (any case,
    blanks around ignored); anything else raises ValueError."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {value!r}")
