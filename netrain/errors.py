"""The exceptions netrain raises; the CLI turns each into a one-line message and an exit code."""

from __future__ import annotations


class NetrainError(Exception):
    """A failure the user can fix: the message says what failed, where, and what to do."""

    exit_code = 1


class UsageError(NetrainError):
    """Bad command-line input (exit code 2, like click's own usage errors)."""

    exit_code = 2


class SpecError(UsageError):
    """A malformed --models, --tasks or other option value."""


class ConfigError(NetrainError):
    """netrain.yaml is missing, unreadable or holds a bad value."""


class ContractError(NetrainError):
    """The model configuration function's input or output breaks the contract."""


class BatchError(NetrainError):
    """A batch cannot be found, read, created or changed."""


class TrackingError(NetrainError):
    """The MLflow tracking backend cannot be reached or refused an operation."""


class RunNotFound(TrackingError):
    """The tracking backend answered: it has no such run."""


class TrackingUnavailable(TrackingError):
    """The tracking backend could not be asked (down, unreachable, refused, timed out)."""


class SchedulerError(NetrainError):
    """SLURM (or the local executor) could not run or report on a job."""


_INTERRUPT: dict[str, int | None] = {"signum": None}


def note_interrupt(signum: int | None) -> None:
    """Remember that the task was signalled (the handler's exception may be wrapped)."""
    _INTERRUPT["signum"] = signum


def pending_interrupt() -> int | None:
    """The signal the task received, if any.

    A signal can land while TensorFlow runs Python code for it (a generator behind
    tf.data, a PyDataset); TF then turns our exception into one of its own errors. The
    training loop asks this to tell such an error from a real failure of the network.
    """
    return _INTERRUPT["signum"]


class TaskInterrupted(BaseException):
    """Raised inside a task when SIGTERM/SIGINT arrives, so runs are closed as KILLED.

    A BaseException so that a user's broad ``except Exception`` cannot swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
