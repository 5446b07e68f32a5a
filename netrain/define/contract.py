"""The model configuration function's contract: the input dict netrain passes, the output
dict it must return, and the checks that name the field and the model when it is broken."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.define.params import TASK_PARAM_NAMES
from netrain.errors import ContractError

#: The seed's input keys, always present.
INPUT_KEYS = (
    *TASK_PARAM_NAMES[:6],  # class, architecture, nb_epoch, epoch_samples, nnets, intelligent
    "wpath",
    "archpath",
    "metricspath",
    "trainingrun",
)
#: Keys netrain adds on top of the seed's.
EXTRA_INPUT_KEYS = ("batch", "batch_dir", "net_index", "seed", "retrain_of")

#: The seed's output keys, all required.
REQUIRED_OUTPUT = (
    "name",
    "nb_epoch",
    "archpath",
    "wpath",
    "metricspath",
    "model_generator",
    "training_generator",
    "evaluation_generator",
    "optimizer",
    "loss",
)
#: Optional output keys netrain understands.
OPTIONAL_OUTPUT = (
    "metrics",
    "batch_size",
    "callbacks",
    "params",
    "early_stopping",
    "validation_steps",
    "verbose",
    "seed",
    "tags",
    "checkpoint",
    "pack",
)


@dataclass
class NetworkConfig:
    """A validated output dict."""

    name: str
    nb_epoch: int
    archpath: Path
    wpath: Path
    metricspath: Path
    model_generator: Callable[[], Any]
    training_generator: Any
    evaluation_generator: Any
    optimizer: Any
    loss: Any
    metrics: list[Any] = field(default_factory=list)
    batch_size: int | None = None
    callbacks: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    early_stopping: dict[str, Any] = field(default_factory=dict)
    validation_steps: int | None = None
    verbose: int = 0
    seed: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    pack: bool | None = None
    unknown_keys: tuple[str, ...] = ()
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def scalar_params(self) -> dict[str, Any]:
        """The output dict's scalars (and the user's ``params``), as MLflow params."""
        out: dict[str, Any] = {
            "name": self.name,
            "nb_epoch": self.nb_epoch,
            "optimizer": describe(self.optimizer),
            "loss": describe(self.loss),
        }
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.metrics:
            out["metrics"] = ",".join(describe(m) for m in self.metrics)
        for key, value in self.early_stopping.items():
            out[f"early_stopping.{key}"] = value
        for key, value in self.params.items():
            out[str(key)] = value
        return out


def describe(value: Any) -> str:
    """A short text for an optimizer/loss/metric given as a string, class, object or function."""
    if isinstance(value, str):
        return value
    if hasattr(value, "get_config") and hasattr(value, "__class__"):
        return type(value).__name__
    return getattr(value, "__name__", type(value).__name__)


def network_seed(batch: str, model_key: str, trainingrun: int, net_index: int) -> int:
    """A stable per-network seed: same network, same seed, on any machine."""
    digest = hashlib.sha256(f"{batch}|{model_key}|{trainingrun}|{net_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def build_input(
    *,
    cls: str,
    architecture: str,
    nb_epoch: int,
    epoch_samples: int,
    nnets: int,
    intelligent: bool,
    batch_dir: Path,
    batch: str,
    trainingrun: int,
    net_index: int,
    retrain_of: str | None = None,
) -> dict[str, Any]:
    """The input dict of the seed, plus batch, batch_dir, net_index, seed and retrain_of."""
    return {
        "class": cls,
        "architecture": architecture,
        "nb_epoch": nb_epoch,
        "epoch_samples": epoch_samples,
        "nnets": nnets,
        "intelligent": intelligent,
        "wpath": str(batch_dir / "weights"),
        "archpath": str(batch_dir / "archs"),
        "metricspath": str(batch_dir / "metrics"),
        "trainingrun": trainingrun,
        "batch": batch,
        "batch_dir": str(batch_dir),
        "net_index": net_index,
        "seed": network_seed(batch, f"{cls}.{architecture}", trainingrun, net_index),
        "retrain_of": retrain_of,
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_data(v: Any) -> bool:
    """Data as the contract allows: (x, y), a generator/iterator, a callable, PyDataset, Dataset."""
    if callable(v) or hasattr(v, "__next__") or hasattr(v, "__iter__"):
        return True
    return hasattr(v, "__getitem__") and hasattr(v, "__len__")


def validate_output(out: Any, model: str,
                    where: str = "model_configuration_function") -> NetworkConfig:
    """Check the output dict field by field; raise ContractError naming the field and model."""

    def fail(msg: str) -> ContractError:
        return ContractError(f"{model}: {where} {msg}")

    if not isinstance(out, Mapping):
        raise fail(f"returned {type(out).__name__}, not a dict: return the output dictionary")
    missing = [k for k in REQUIRED_OUTPUT if k not in out]
    if missing:
        raise fail(
            f"output is missing {', '.join(repr(k) for k in missing)}: add "
            f"{'it' if len(missing) == 1 else 'them'} to the returned dict"
        )

    name = out["name"]
    if not isinstance(name, str) or not name.strip():
        raise fail(f"returned 'name' = {name!r}: it must be a non-empty string")
    nb_epoch = out["nb_epoch"]
    if not _is_int(nb_epoch) or nb_epoch < 1:
        raise fail(f"returned 'nb_epoch' = {nb_epoch!r}: it must be a whole number >= 1")
    paths: dict[str, Path] = {}
    for key in ("archpath", "wpath", "metricspath"):
        value = out[key]
        if not isinstance(value, (str, Path)) or not str(value):
            raise fail(f"returned {key!r} = {value!r}: it must be a directory path")
        paths[key] = Path(value)
    if not callable(out["model_generator"]):
        raise fail("returned 'model_generator' that is not callable: return a function that "
                   "builds and returns the (uncompiled) keras model")
    for key in ("training_generator",):
        if out[key] is None or not _is_data(out[key]):
            raise fail(f"returned {key!r} of type {type(out[key]).__name__}: give (x, y) arrays, "
                       "a generator yielding (x, y), a function returning one, a PyDataset or "
                       "a tf.data.Dataset")
    ev = out["evaluation_generator"]
    if ev is not None and not _is_data(ev):
        raise fail(f"returned 'evaluation_generator' of type {type(ev).__name__}: give (x, y) "
                   "arrays, a generator, a function, a PyDataset, a tf.data.Dataset or None")
    for key in ("optimizer", "loss"):
        value = out[key]
        if value is None or (isinstance(value, str) and not value.strip()) or not (
            isinstance(value, str) or callable(value) or hasattr(value, "get_config")
        ):
            raise fail(f"returned {key!r} = {value!r}: give a keras {key} name like "
                       f"{'adam' if key == 'optimizer' else 'mse'} or a keras {key} object")

    metrics = out.get("metrics") or []
    if isinstance(metrics, (str,)) or not isinstance(metrics, (list, tuple)):
        raise fail(f"returned 'metrics' = {metrics!r}: it must be a list like ['accuracy']")
    batch_size = out.get("batch_size")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise fail(f"returned 'batch_size' = {batch_size!r}: it must be a whole number >= 1")
    callbacks = out.get("callbacks")
    if callbacks is not None and not (isinstance(callbacks, (list, tuple)) or callable(callbacks)):
        raise fail("returned 'callbacks' that is neither a list nor a function returning one")
    params = out.get("params") or {}
    if not isinstance(params, Mapping):
        raise fail(f"returned 'params' = {params!r}: it must be a dict of hyperparameters")
    for k, v in params.items():
        if not isinstance(v, (str, int, float, bool)) and v is not None:
            raise fail(f"returned params[{k!r}] of type {type(v).__name__}: params must be "
                       "scalars (str, int, float, bool)")
    early = out.get("early_stopping") or {}
    if not isinstance(early, Mapping):
        raise fail("returned 'early_stopping' that is not a dict (monitor, patience, "
                   "min_delta, mode, threshold)")
    allowed_early = {"monitor", "patience", "min_delta", "mode", "threshold",
                     "restore_best_weights"}
    bad = sorted(set(early) - allowed_early)
    if bad:
        raise fail(f"returned early_stopping key {bad[0]!r}: allowed are "
                   f"{', '.join(sorted(allowed_early))}")
    vsteps = out.get("validation_steps")
    if vsteps is not None and (not _is_int(vsteps) or vsteps < 1):
        raise fail(f"returned 'validation_steps' = {vsteps!r}: it must be a whole number >= 1")
    verbose = out.get("verbose", 0)
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise fail(f"returned 'verbose' = {verbose!r}: it must be 0, 1 or 2")
    seed = out.get("seed")
    if seed is not None and not _is_int(seed):
        raise fail(f"returned 'seed' = {seed!r}: it must be a whole number")
    tags = out.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise fail("returned 'tags' that is not a dict")

    ckpt = out.get("checkpoint") or {}
    try:
        from netrain.define.checkpoint import Policy

        Policy.from_mapping(ckpt)
    except ValueError as exc:
        raise fail(f"returned {exc}") from None
    pack = out.get("pack")
    if pack is not None and not isinstance(pack, bool):
        raise fail(f"returned 'pack' = {pack!r}: it must be true or false (train this model's "
                   "networks packed together or one by one; leave it out for the batch's "
                   "--pack)")

    known = set(REQUIRED_OUTPUT) | set(OPTIONAL_OUTPUT)
    unknown = tuple(sorted(str(k) for k in out if k not in known))
    return NetworkConfig(
        name=name.strip(),
        nb_epoch=nb_epoch,
        archpath=paths["archpath"],
        wpath=paths["wpath"],
        metricspath=paths["metricspath"],
        model_generator=out["model_generator"],
        training_generator=out["training_generator"],
        evaluation_generator=ev,
        optimizer=out["optimizer"],
        loss=out["loss"],
        metrics=list(metrics),
        batch_size=batch_size,
        callbacks=callbacks,
        params=dict(params),
        early_stopping=dict(early),
        validation_steps=vsteps,
        verbose=verbose,
        seed=seed,
        tags={str(k): str(v) for k, v in tags.items()},
        pack=pack,
        unknown_keys=unknown,
        checkpoint=dict(ckpt),
    )


def call_config_function(fn: Callable[[dict[str, Any]], Any], inputs: dict[str, Any],
                         model: str) -> NetworkConfig:
    """Call the user's function with a copy of ``inputs`` and validate what comes back."""
    where = getattr(fn, "__name__", "model_configuration_function")
    try:
        out = fn(dict(inputs))
    except Exception as exc:
        raise ContractError(
            f"{model}: {where} raised {type(exc).__name__}: {first_line(str(exc))}"
            f"{raised_at(exc)}: fix {where}"
        ) from exc
    return validate_output(out, model, where)


def first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else "(no message)"


def raised_at(exc: BaseException) -> str:
    """`` (at file.py:LINE)``: where the exception was raised, to start looking there."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {Path(last.filename).name}:{last.lineno})"
