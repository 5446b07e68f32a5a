"""Whether networks can be trained packed: what in their configuration, data, model or
optimizer stops it (each answer one line, said when they fall back to the sequential trainer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netrain.train import batches
from netrain.train.sequential import NetworkJob, is_array_pair, materialise, pydataset_workers

#: Optimizer settings that couple the stacked networks (a norm over all of them).
_COUPLING_OPTIMIZER_KEYS = ("clipnorm", "global_clipnorm", "gradient_accumulation_steps",
                            "loss_scale_factor")
#: Optimizers whose update is elementwise, so one of them on stacked variables is the
#: networks' own optimizers side by side (others, e.g. LAMB, use a norm per variable).
_ELEMENTWISE_OPTIMIZERS = frozenset({"SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop",
                                     "Adagrad", "Adadelta", "Lion", "Ftrl"})
#: Of those, the ones whose step is proportional to the learning rate, so networks that
#: differ only in it share a group (the step is rescaled per network).
LINEAR_IN_LR = _ELEMENTWISE_OPTIMIZERS - {"Ftrl"}
#: Trainer methods a model may not override to be packed (the packed step replaces them).
_STEP_METHODS = ("train_step", "test_step", "make_train_function", "make_test_function",
                 "fit")


def _data_refusal(data: Any, what: str, optional: bool, validation_steps: int | None = None
                  ) -> str | None:
    """Why this data cannot be packed, from its form alone (a source's batches are looked at
    when its network is built, see :func:`batch_refusal`)."""
    if data is None:
        return None if optional else f"{what} is missing"
    try:  # a generator is not called: its first batch is drawn once, when built
        d = data if hasattr(data, "__next__") else materialise(data)
    except Exception as exc:  # the sequential path will report it properly
        return f"{what} raised {type(exc).__name__} when called"
    if batches.is_dataset(d):
        return _spec_refusal(d.element_spec, what)
    if batches.is_pydataset(d):
        if validation_steps and what == "evaluation_generator":
            return (f"{what} is a PyDataset with validation_steps: packing validates a "
                    "PyDataset one whole pass an epoch")
        if pydataset_workers(d):
            return (f"{what} is a PyDataset with workers: packing reads each network's "
                    "batches in order in one thread")
        return None
    if not is_array_pair(d):
        if batches.is_stream(d):
            return None
        return (f"{what} is a {type(d).__name__}: packing needs (x, y) numpy arrays, a "
                "generator of (x, y) batches, a PyDataset or a tf.data.Dataset")
    if len(d) == 3:
        return f"{what} has sample weights: packing supports (x, y) only"
    for part, name in ((d[0], "x"), (d[1], "y")):
        if isinstance(part, (dict, list, tuple)) or not hasattr(part, "shape") \
                or not hasattr(part, "dtype"):
            return f"{what}'s {name} is a {type(part).__name__}: packing needs one array"
    return None


def _spec_refusal(spec: Any, what: str) -> str | None:
    if not isinstance(spec, tuple) or len(spec) != 2:
        return (f"{what} is a tf.data.Dataset of {type(spec).__name__} elements: packing "
                "needs (x, y) batches of one array each")
    for part, name in zip(spec, ("x", "y"), strict=True):
        if not hasattr(part, "shape") or isinstance(part, (dict, list, tuple)):
            return f"{what}'s {name} is a {type(part).__name__}: packing needs one array"
    return None


def batch_refusal(batch: Any, what: str) -> str | None:
    """Why a source's (first) batch cannot be stacked with other networks' batches."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        return f"{what} yields a {type(batch).__name__}: packing needs (x, y) batches"
    if len(batch) == 3:
        return f"{what} yields sample weights: packing supports (x, y) only"
    for part, name in zip(batch, ("x", "y"), strict=True):
        if isinstance(part, (dict, list, tuple)) or not hasattr(part, "shape") \
                or not hasattr(part, "dtype"):
            return f"{what}'s {name} batches are {type(part).__name__}s: packing needs one array"
    return None


def _overrides(model: Any, keras: Any, name: str) -> bool:
    for klass in type(model).__mro__:
        if name in vars(klass):
            return not klass.__module__.startswith("keras.")
    return False


def model_refusal(model: Any, keras: Any) -> str | None:
    """Why this (compiled) model cannot be packed, or None."""
    return structure_refusal(model, keras) or optimizer_refusal(model.optimizer) or \
        variables_refusal(model)


def structure_refusal(model: Any, keras: Any) -> str | None:
    if not isinstance(model, keras.Model):
        return f"the model is a {type(model).__name__}, not a keras.Model"
    for name in _STEP_METHODS:
        if _overrides(model, keras, name):
            return f"{type(model).__name__} has a custom {name}"
    return None


def optimizer_refusal(opt: Any) -> str | None:
    """Why networks with this optimizer cannot share one stacked optimizer, or None."""
    if opt is None:
        return "the model has no optimizer"
    if "LossScale" in type(opt).__name__:
        return "a loss-scale optimizer scales all networks together"
    if type(opt).__name__ not in _ELEMENTWISE_OPTIMIZERS:
        return (f"optimizer {type(opt).__name__} is not known to update each element on its "
                "own (a norm over a stacked variable would mix the networks)")
    conf = opt.get_config()
    for key in _COUPLING_OPTIMIZER_KEYS:
        value = conf.get(key)
        if value is not None and not (key == "gradient_accumulation_steps" and value == 1):
            return f"optimizer {key}={value} would couple the stacked networks"
    return None


def variables_refusal(model: Any) -> str | None:
    if not model.trainable_variables:
        return "the model has no trainable variables after building"
    return None


def _callbacks_refusal(cbs: Any) -> str | None:
    """Callbacks need each network's own model every batch, so they stop packing. A factory
    (the guide's ``lambda: [...]``) is asked what it gives: one that gives none, as many
    configurations' do for most runs, packs."""
    if callable(cbs):
        try:
            cbs = cbs()
        except Exception as e:  # the sequential path calls it again and reports it per network
            return f"the configuration's callbacks factory failed ({type(e).__name__}: {e})"
    if cbs:
        return "the configuration gives callbacks, which need the model each batch"
    return None


def pack_refusal(jobs: Sequence[NetworkJob], models: Sequence[Any] = ()) -> str | None:
    """Why these networks cannot be trained packed, or None. Without ``models`` the checks
    are those that need no model (backend, callbacks, data forms); with the networks' built
    and compiled models, :func:`model_refusal` too (custom train_step, optimizer...). What
    only tracing shows (Python control flow on tensors, a variable without gradient) makes
    the packed step fail before it trains, which falls back the same way."""
    import keras

    for model in models:
        why = model_refusal(model, keras)
        if why:
            return why

    if len(jobs) < 2:
        return "only one network to train"
    if keras.backend.backend() not in ("tensorflow", "jax"):
        return ("packing is implemented for the tensorflow and jax backends, not "
                f"{keras.backend.backend()}")
    for job in jobs:
        cfg = job.config
        why = _callbacks_refusal(cfg.callbacks)
        if why:
            return why
        why = _data_refusal(cfg.training_generator, "training_generator", optional=False) \
            or _data_refusal(cfg.evaluation_generator, "evaluation_generator", optional=True,
                             validation_steps=cfg.validation_steps)
        if why:
            return why
    return None
