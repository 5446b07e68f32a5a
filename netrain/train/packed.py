"""Packed training: a task's same-shaped networks trained together as one vectorized step.

:func:`train_networks_packed` has the contract of :func:`netrain.train.sequential.train_networks`.
Networks whose model, data shapes and settings are identical are stacked (one slice per
network) and advanced by one compiled step, ``keras.ops.vectorized_map`` over the template
model's ``stateless_call``; the gradient of the summed losses gives each network its own
gradient, and one optimizer on the stacked variables is, being elementwise, the N networks'
optimizers side by side. Each network keeps its own initial weights (built under its own
seed exactly as the sequential path builds it), its own batch order (a numpy generator seeded
with the network's seed, see :func:`epoch_order`), its own learning rate, its own per-epoch
metrics and its own early stopping (a stopped network is frozen). At the end each network's
values go back into its own keras model, which is saved with ``save_network``.

Checkpoints are the sequential path's (``save_checkpoint``: the keras model with its optimizer
state, its metadata, early stopping's best weights), so either trainer resumes the other's.
They are written for each network still training when the group's ``checkpoint.Schedule`` says
so, and on a signal at the last completed epoch; networks resumed at the same epoch and
optimizer step are packed together again and continue with the batch order of that epoch.

What cannot be packed (see :func:`pack_refusal`) falls back to the sequential trainer with
one ``netrain: packing off ...`` line; the reason is left on each job as ``job.pack_fallback``
(``None`` for a packed network, whose ``job.pack_group`` is its group's size).

Observer calls: ``network_started`` for every network of a group when the group forms (their
runs open, and are shipped, while it trains); once it has trained, each network's epochs and
``network_finished`` in order (or, on a signal, its epochs so far and ``network_interrupted``
when the observer has it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from netrain.define import checkpoint
from netrain.errors import TaskInterrupted, pending_interrupt
from netrain.train import batches
from netrain.train.sequential import (
    EpochProgress,
    NetworkJob,
    NetworkResult,
    Observer,
    StopNow,
    early_stopping_state,
    interrupt_check,
    is_array_pair,
    load_checkpoint,
    materialise,
    pydataset_workers,
    resume_callback,
    save_checkpoint,
    save_network,
    threshold_callback,
    train_networks,
)

#: Optimizer settings that couple the stacked networks (a norm over all of them).
_COUPLING_OPTIMIZER_KEYS = ("clipnorm", "global_clipnorm", "gradient_accumulation_steps",
                            "loss_scale_factor")
#: Optimizers whose update is elementwise, so one of them on stacked variables is the
#: networks' own optimizers side by side (others, e.g. LAMB, use a norm per variable).
_ELEMENTWISE_OPTIMIZERS = frozenset({"SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop",
                                     "Adagrad", "Adadelta", "Lion", "Ftrl"})
#: Of those, the ones whose step is proportional to the learning rate, so networks that
#: differ only in it share a group (the step is rescaled per network).
_LINEAR_IN_LR = _ELEMENTWISE_OPTIMIZERS - {"Ftrl"}
#: The share of an epoch's time a copy of the group's state (kept so that a signal mid-epoch
#: checkpoints the epoch's start) may cost; in shorter epochs a signal finishes the epoch.
SNAPSHOT_BUDGET = 0.01
#: Draw a step's batches from the networks' sources in a thread while the previous step
#: runs. Off: it measured no faster on 2 cores (MLP 6-8-1, N=128: 2.85 s against 2.53 s
#: drawn in the step's thread; MLP 32-64-64-1: 5.84 s against 6.04 s; BENCHMARKS.md).
PREFETCH = False
#: Trainer methods a model may not override to be packed (the packed step replaces them).
_STEP_METHODS = ("train_step", "test_step", "make_train_function", "make_test_function",
                 "fit")


def say(text: str) -> None:
    print(f"netrain: {text}", flush=True)


def spans(indices: Sequence[int]) -> str:
    """``0-3, 7, 9-10`` for [0, 1, 2, 3, 7, 9, 10]: runs of consecutive indices."""
    out: list[str] = []
    run: list[int] = []
    for i in indices:
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def epoch_order(rng: Any, n: int, epoch_samples: int) -> Any:
    """The sample indices of one epoch: a permutation of the ``n`` samples or, when
    ``epoch_samples`` is another positive count, that many from repeated permutations."""
    import numpy as np

    if epoch_samples <= 0 or epoch_samples == n:
        return rng.permutation(n)
    reps = math.ceil(epoch_samples / n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:epoch_samples]


def network_rng(job: NetworkJob) -> Any:
    """The numpy generator that owns a network's batch order (seeded like its weights)."""
    import numpy as np

    cfg = job.config
    return np.random.default_rng(cfg.seed if cfg.seed is not None else job.seed)


class SeededBatches:
    """(x, y) arrays served to ``fit`` in the packed trainer's order: the sequential path
    gives the same batches with ``fit(SeededBatches.make(job, x, y, batch_size),
    shuffle=False)`` (which makes a network's results the same with or without --pack)."""

    @staticmethod
    def make(job: NetworkJob, x: Any, y: Any, batch_size: int) -> Any:
        import keras
        import numpy as np

        rng = network_rng(job)
        n = len(x)

        class _Seeded(keras.utils.PyDataset):
            def __init__(self) -> None:
                super().__init__()
                self.begun = 0
                self.order = epoch_order(rng, n, job.epoch_samples)

            def __len__(self) -> int:
                return math.ceil(len(self.order) / batch_size)

            def __getitem__(self, i: int) -> Any:
                idx = self.order[i * batch_size:(i + 1) * batch_size]
                return np.asarray(x)[idx], np.asarray(y)[idx]

            def on_epoch_begin(self) -> None:
                if self.begun:  # the first epoch's order was drawn when made
                    self.order = epoch_order(rng, n, job.epoch_samples)
                self.begun += 1

        return _Seeded()


# ------------------------------------------------------------------------------- refusal

def _data_refusal(data: Any, what: str, optional: bool, validation_steps: int | None = None
                  ) -> str | None:
    """Why this data cannot be packed, from its form alone (a source's batches are looked at
    when its network is built, see :func:`_batch_refusal`)."""
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


def _batch_refusal(batch: Any, what: str) -> str | None:
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
    if not isinstance(model, keras.Model):
        return f"the model is a {type(model).__name__}, not a keras.Model"
    for name in _STEP_METHODS:
        if _overrides(model, keras, name):
            return f"{type(model).__name__} has a custom {name}"
    opt = model.optimizer
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


# ------------------------------------------------------------------------------ building

@dataclass
class _Member:
    """One network of a group: its job, its own keras model and its own data."""

    index: int
    job: NetworkJob
    model: Any
    x: Any
    y: Any
    xv: Any = None
    yv: Any = None
    lr: float | None = None
    key: tuple[Any, ...] = ()
    history: dict[str, list[float]] = field(default_factory=dict)
    arch_json: str | None = None  # model.to_json() once built (its config does not change)
    start: int = 0  # epochs already trained (resumed from its checkpoint)
    best: list[Any] | None = None  # early stopping's best weights from the checkpoint
    #: batches.Stream of a generator, PyDataset or Dataset (then x, y / xv, yv hold its
    #: first batch); None for (x, y) arrays
    src: Any = None
    vsrc: Any = None


def _as_array(a: Any, keras: Any) -> Any:
    import numpy as np

    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        arr = arr.astype(keras.backend.floatx())
    return arr


def _describe(value: Any) -> str:
    conf = getattr(value, "get_config", None)
    if callable(conf):
        try:
            return f"{type(value).__name__}{sorted(conf().items())!r}"
        except Exception:
            pass
    return repr(value) if isinstance(value, str) else getattr(value, "__qualname__",
                                                                 type(value).__name__)


@contextlib.contextmanager
def _kernel_cache_kept(keras: Any) -> Iterator[None]:
    """TensorFlow's eager kernel cache is not cleared inside (by keras' clear_session and
    set_random_seed, which both clear it); elsewhere nothing changes."""
    if keras.backend.backend() != "tensorflow":  # no kernels of TensorFlow's to keep
        yield
        return
    from tensorflow.python import pywrap_tfe

    clear = getattr(pywrap_tfe, "TFE_ContextClearCaches", None)
    if clear is None:
        yield
        return
    pywrap_tfe.TFE_ContextClearCaches = lambda handle: None
    try:
        yield
    finally:
        pywrap_tfe.TFE_ContextClearCaches = clear


class _Seeder:
    """Puts keras in the state train_one builds a network in: ``clear_session`` then
    ``set_random_seed``, the same values in every random generator, without clearing
    TensorFlow's eager kernel cache where that cannot change a value.

    Both calls clear that cache, and re-creating every kernel afterwards made a member's
    build 2.5x slower (MLP 32-64-64-1: 103 ms -> 40 ms with the cache kept). The clear
    matters only for stateful random ops, whose cached kernel continues its stream where a
    fresh one restarts it. Such a kernel is cached under its op's attributes, which hold the
    global seed, so a build under a global seed that no build since the last clear has used
    can meet none of them: the first member, and any member whose seed repeats (a
    configuration's fixed ``seed``), get the full clear.
    """

    def __init__(self) -> None:
        self.since_clear: set[int] = set()

    def __call__(self, keras: Any, seed: int) -> None:
        key = seed % (2**31 - 1)  # as TensorFlow truncates a global seed
        if not self.since_clear or key in self.since_clear:
            keras.backend.clear_session(free_memory=False)  # its gc costs ~0.3 s
            keras.utils.set_random_seed(seed)
            self.since_clear = {key}
            return
        with _kernel_cache_kept(keras):
            keras.backend.clear_session(free_memory=False)
            keras.utils.set_random_seed(seed)
        self.since_clear.add(key)


class _YoungGC:
    """Python's garbage collector kept to what the members built since its last call made.

    The group's members stay alive until it has trained; every automatic full collection
    walks all of them again, so building a member got slower the more had been built before
    it. Every ``every`` members the young generations are collected (the builds' garbage
    goes) and what survives is frozen out of later collections; :meth:`done` gives it back
    to the collector. A small gain (bench/build_cost.py, MLP 6-8-1: 12.0 -> 10.5 ms a
    member at N=64, 12.8 -> 12.3 at N=256); the rest is the model's own construction."""

    def __init__(self, every: int = 8) -> None:
        self.every, self.count = every, 0

    def __call__(self) -> None:
        import gc

        self.count += 1
        if self.count % self.every == 0:
            gc.collect(1)
            gc.freeze()

    def done(self) -> None:
        import gc

        if self.count >= self.every:
            gc.unfreeze()


def _build_member(index: int, job: NetworkJob, keras: Any,
                  seeder: _Seeder | None = None) -> _Member | str:
    """Build a network exactly as train_one does; a str return is why it cannot be packed."""
    cfg = job.config
    (seeder or _Seeder())(keras, cfg.seed if cfg.seed is not None else job.seed)
    model = cfg.model_generator()
    if not hasattr(model, "fit") or not hasattr(model, "compile"):
        return f"model_generator returned {type(model).__name__}, not a keras model"
    if job.init_weights is not None and job.resume is None:
        model.load_weights(str(job.init_weights))
    model.compile(optimizer=cfg.optimizer, loss=cfg.loss, metrics=list(cfg.metrics) or None)
    resuming = job.resume is not None and job.batch_dir is not None
    start_epoch = job.resume.epoch if resuming and job.resume is not None else 0
    bs = cfg.batch_size or 32
    d = materialise(cfg.training_generator)
    src = vsrc = None
    rng_state = _GlobalRandom()
    before = _GlobalRandom.fingerprint()
    if is_array_pair(d):
        x, y = _as_array(d[0], keras), _as_array(d[1], keras)
        samples = len(x) if job.epoch_samples <= 0 else job.epoch_samples
        train_steps: int | None = math.ceil(samples / bs)
    else:  # the order of draws is train_one's: this first batch, then the evaluation's
        src = batches.open_stream(d, training=True, epoch_samples=job.epoch_samples,
                                  seed=cfg.seed if cfg.seed is not None else job.seed,
                                  start_epoch=start_epoch)
        _peeked(job, "training_generator", cfg.training_generator, src)
        why = _batch_refusal(src.first, "training_generator")
        if why:
            return why
        x, y = _as_array(src.first[0], keras), _as_array(src.first[1], keras)
        train_steps = src.steps
    xv = yv = None
    if cfg.evaluation_generator is not None:
        v = materialise(cfg.evaluation_generator)
        if is_array_pair(v):
            xv, yv = _as_array(v[0], keras), _as_array(v[1], keras)
        else:
            vsteps = cfg.validation_steps
            if not (batches.is_dataset(v) or batches.is_pydataset(v)):
                vsteps = vsteps or max(1, math.ceil((train_steps or 4) / 4))
            vsrc = batches.open_stream(v, training=False, steps=vsteps,
                                       start_epoch=start_epoch)
            _peeked(job, "evaluation_generator", cfg.evaluation_generator, vsrc)
            why = _batch_refusal(vsrc.first, "evaluation_generator")
            if why:
                return why
            xv, yv = _as_array(vsrc.first[0], keras), _as_array(vsrc.first[1], keras)
    if _GlobalRandom.fingerprint() != before:
        # its first batches drew from numpy's or Python's global generator: from now on
        # its draws get the state as this network left it (~0.2 ms a draw, so only then)
        rng_state.keep()
        for stream in (src, vsrc):
            if stream is not None:
                stream.random = rng_state
    if not model.built:
        model(x[:1])
    why = model_refusal(model, keras)
    if why:
        return why
    start, best, history = 0, None, {}
    if job.resume is not None and job.batch_dir is not None:
        # as train_one resumes: weights and optimizer state from the checkpoint
        best = load_checkpoint(model, job, {"x": x})
        job.checkpoint_epoch = start = job.resume.epoch
        history = {k: list(v) for k, v in job.resume.history.items()}
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    conf = dict(model.optimizer.get_config())
    conf.pop("name", None)
    lr_conf = conf.pop("learning_rate", None)
    lr: float | None = None
    if isinstance(lr_conf, (int, float)) and type(model.optimizer).__name__ in _LINEAR_IN_LR:
        lr = float(lr_conf)
    else:
        conf["learning_rate"] = lr_conf  # a schedule: must be the same for the group
    arch_json: str | None = None
    try:
        arch_json = model.to_json()
        arch: Any = json.loads(arch_json)
        arch.pop("compile_config", None)  # the optimizer is compared below
        arch = json.dumps(arch, sort_keys=True)
    except Exception:  # a subclassed model without get_config: its class and params
        arch = (type(model).__qualname__, sorted(cfg.params.items()))
    key = (
        arch,
        tuple((tuple(v.shape), str(v.dtype)) for v in model.trainable_variables),
        tuple((tuple(v.shape), str(v.dtype)) for v in model.non_trainable_variables),
        type(model.optimizer).__name__, repr(sorted(conf.items())),
        _describe(cfg.loss), tuple(_describe(m) for m in cfg.metrics),
        cfg.batch_size, cfg.nb_epoch, job.epoch_samples, job.intelligent,
        repr(sorted(cfg.early_stopping.items())),
        _data_key(src, x, y),
        None if xv is None else _data_key(vsrc, xv, yv),
        # a group resumes together: the same epoch, the same optimizer step, one policy
        start, iterations, job.policy, job.batch_dir is None,
    )
    return _Member(index=index, job=job, model=model, x=x, y=y, xv=xv, yv=yv, lr=lr, key=key,
                   history=history, arch_json=arch_json, start=start, best=best, src=src,
                   vsrc=vsrc)


def _data_key(stream: Any, x: Any, y: Any) -> tuple[Any, ...]:
    """What must be equal for networks' data to stack: the arrays' shapes, or a source's
    form, batches an epoch and first batch's shapes (batch size included) and dtypes."""
    shapes = (x.shape, str(x.dtype), y.shape, str(y.dtype))
    if stream is None:
        return ("arrays", *shapes)
    return (stream.kind, stream.steps, *shapes)


def _peeked(job: NetworkJob, attr: str, given: Any, stream: Any) -> None:
    """Remember a source whose first batch was drawn, so that a fallback given the same
    generator object again gets that batch back (see train_networks_packed)."""
    if stream.reader is not None and hasattr(given, "__next__"):
        vars(job).setdefault("peeked", {})[attr] = (given, stream.reader)


class _GlobalRandom:
    """A network's own state of numpy's and Python's global random generators, swapped in
    around each draw from its sources: a generator that draws from them (np.random.rand)
    gets, packed, the values it would get trained alone after its first batch."""

    def __init__(self) -> None:
        self.np_state: Any = None
        self.py_state: Any = None

    @staticmethod
    def fingerprint() -> tuple[Any, ...]:
        """Where numpy's and Python's global generators stand (to see whether a draw
        used them)."""
        import random

        import numpy as np

        state: Any = np.random.get_state()
        return state[2], state[1].tobytes(), random.getstate()

    def keep(self) -> None:
        import random

        import numpy as np

        self.np_state, self.py_state = np.random.get_state(), random.getstate()

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        import random

        import numpy as np

        outer = np.random.get_state(), random.getstate()
        np.random.set_state(self.np_state)
        random.setstate(self.py_state)
        try:
            yield
        finally:
            self.np_state, self.py_state = np.random.get_state(), random.getstate()
            np.random.set_state(outer[0])
            random.setstate(outer[1])


# ------------------------------------------------------------------------------ training

def train_networks_packed(
    indices: Sequence[int],
    make_job: Callable[[int], NetworkJob],
    observer: Observer,
) -> list[NetworkResult | None]:
    """Train the networks, packing those that can be packed; same contract as
    :func:`netrain.train.sequential.train_networks`."""
    import keras

    results: dict[int, NetworkResult | None] = {}
    jobs: dict[int, NetworkJob] = {}
    for index in indices:
        try:
            jobs[index] = make_job(index)
        except Exception as exc:
            _reraise_interrupt(exc)
            observer.network_failed(index, None, exc)
            results[index] = None

    def fallback(idx: list[int], reason: str, fresh: bool = True) -> None:
        """Train ``idx`` one by one. ``fresh``: the job's objects (its optimizer) were used
        by a packing attempt, so the configuration is asked again for new ones."""
        if not idx:
            return
        nets = ", ".join(str(i) for i in idx)
        say(f"packing off for network(s) {nets}: {reason}; training them one by one")

        def again(i: int) -> NetworkJob:
            job = make_job(i) if fresh else jobs[i]
            # a generator object given again (not made anew) gets its peeked batch back
            for attr, (given, reader) in vars(jobs[i]).get("peeked", {}).items():
                if fresh and getattr(job.config, attr) is given and reader.drawn == 0:
                    setattr(job.config, attr, reader.replay())
            _mark(job, reason, 0)
            jobs[i] = job
            return job

        for i in idx:
            _mark(jobs[i], reason, 0)
        for i, r in zip(idx, train_networks(idx, again, observer), strict=True):
            results[i] = r

    reason = pack_refusal(list(jobs.values()))
    if reason:
        fallback(list(jobs), reason, fresh=False)
        return [results[i] for i in indices]

    groups: dict[Any, list[_Member]] = {}
    refused: dict[str, list[int]] = {}
    seeder, young_gc = _Seeder(), _YoungGC()
    try:
        for index, job in jobs.items():
            try:
                built = _build_member(index, job, keras, seeder)
            except Exception as exc:
                _reraise_interrupt(exc)
                built = f"building it failed ({type(exc).__name__}: {_first_line(exc)})"
            young_gc()
            if isinstance(built, str):
                refused.setdefault(built, []).append(index)
                continue
            groups.setdefault(built.key, []).append(built)
    finally:
        young_gc.done()
    for why, idx in refused.items():
        fallback(idx, why)

    pending = list(groups.values())
    for g, members in enumerate(pending):
        idx = [m.index for m in members]
        if len(members) < 2:
            fallback(idx, "no other network has the same shapes and settings" +
                     (" and resumes at the same epoch" if members[0].start else ""))
            continue
        signum = pending_interrupt()
        if signum is not None:  # signalled between groups: stop before the next one
            raise TaskInterrupted(signum)
        # The group's runs open before it trains, so that their shipping (creating runs
        # in MLflow, their params) overlaps the training instead of following it.
        for m in members:
            _mark(m.job, None, len(members))
            observer.network_started(m.job)
        try:
            seconds = _PackedGroup(members, keras).train(observer)
        except Exception as exc:
            _reraise_interrupt(exc)
            del members[:]
            keras.backend.clear_session(free_memory=True)
            fallback(idx, f"the packed step failed ({type(exc).__name__}: {_first_line(exc)})")
            continue
        say(f"packed {len(members)} networks ({spans(idx)}) into one step: {seconds:.1f} s")
        young_gc = _YoungGC()
        try:
            for m in members:
                results[m.index] = _finish(m, observer, seconds / len(members))
                young_gc()
        finally:
            young_gc.done()
        del members[:]
        # the group's memory back before the next group (its garbage collection costs
        # ~0.5 s at 128 networks: not worth it after the last)
        keras.backend.clear_session(free_memory=g + 1 < len(pending))
    return [results[i] for i in indices]


@contextlib.contextmanager
def _ahead(items: Iterator[Any], thread: bool, depth: int = 2) -> Iterator[Iterator[Any]]:
    """``items``, produced up to ``depth`` ahead by a thread (``thread``) while the caller
    works on the current one; an exception of the producer is raised to the caller. On the
    way out the producer is stopped (it may have drawn what was never used)."""
    if not thread:
        yield items
        return
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(("error", exc))
            return
        put(("end", None))

    def consume() -> Iterator[Any]:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    worker = threading.Thread(target=produce, name="netrain-draws", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()


def np_equal(a: Any, b: Any) -> bool:
    return bool((a == b).all())


def _mark(job: NetworkJob, fallback: str | None, group: int) -> None:
    """Leave on the job why it was not packed (``pack_fallback``) and its group's size."""
    vars(job).update(pack_fallback=fallback, pack_group=group)


def pack_fallback(job: NetworkJob) -> str | None:
    """Why this network was trained one by one (None when it was packed or not tried)."""
    return vars(job).get("pack_fallback")


def _first_line(exc: BaseException) -> str:
    """The message's first line; for an error tf.function re-raised ("in user code: ..."
    and a stack), the original message, which is its last line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return "no message"
    line = lines[-1] if lines[0].startswith("in user code") and len(lines) > 1 else lines[0]
    return line.removeprefix(f"{type(exc).__name__}: ")


def train_networks_maybe_packed(
    indices: Sequence[int],
    make_job: Callable[[int], NetworkJob],
    observer: Observer,
    pack: bool,
) -> list[NetworkResult | None]:
    """The task's entry: the batch's ``pack`` flag, unless the configuration's output says
    ``pack: true/false`` for this model (asked of the task's first network; a task trains
    one model). Without packing this is exactly ``training.train_networks``."""
    if not indices:
        return []
    first: dict[int, NetworkJob] = {}
    try:
        first[indices[0]] = make_job(indices[0])
    except Exception as exc:  # the trainer asks again and reports it at its turn
        _reraise_interrupt(exc)
    wanted = first[indices[0]].config.pack if first else None
    if wanted is None:
        wanted = pack

    def cached(i: int) -> NetworkJob:
        job = first.pop(i, None)
        return job if job is not None else make_job(i)

    if not wanted:
        return train_networks(indices, cached, observer)
    return train_networks_packed(indices, cached, observer)


def _reraise_interrupt(exc: BaseException) -> None:
    signum = pending_interrupt()
    if signum is not None:
        raise TaskInterrupted(signum) from exc


def _finish(m: _Member, observer: Observer, seconds: float) -> NetworkResult | None:
    """Replay the network's epochs to the observer (its run was opened when its group
    formed) and save it, as the sequential path."""
    job = m.job
    try:
        for epoch in range(len(next(iter(m.history.values()), []))):
            observer.epoch_end(job, epoch, {k: v[epoch] for k, v in m.history.items()
                                            if epoch < len(v)})
        files = save_network(m.model, job, m.history, m.arch_json)
        if job.batch_dir is not None and not job.policy.keep:
            checkpoint.remove(job.batch_dir, job.stem)
        epochs = len(next(iter(m.history.values()), []))
        result = NetworkResult(net_index=job.net_index, epochs=epochs, history=m.history,
                               seconds=seconds, stopped_early=epochs < job.config.nb_epoch,
                               files=files)
        observer.network_finished(job, result)
        return result
    except Exception as exc:
        _reraise_interrupt(exc)
        observer.network_failed(m.index, job, exc)
        return None


class _PackedGroup:
    """The stacked state of a group of networks and the compiled steps that advance it."""

    def __init__(self, members: list[_Member], keras: Any) -> None:
        import numpy as np

        self.keras, self.np = keras, np
        #: jax: the steps are pure functions of the state (jax.jit), which is read from and
        #: written back to the stacked variables around each call; tensorflow: tf.function
        #: steps that update the stacked variables themselves
        self.jax = keras.backend.backend() == "jax"
        self.tf: Any = None
        if not self.jax:
            import tensorflow as tf

            self.tf = tf
        self.members = members
        self.k = len(members)
        self.template = members[0].model
        cfg = members[0].job.config
        self.cfg = cfg
        self.bs = cfg.batch_size or 32
        first = members[0]
        # Build the compiled loss and metrics (and the optimizer) on the template.
        self.template._symbolic_build(data_batch=(first.x[:self.bs], first.y[:self.bs]))
        self.tvars = list(self.template.trainable_variables)
        self.ntvars = list(self.template.non_trainable_variables)
        self.mvars = list(self.template.metrics_variables)
        self.has_training_arg = bool(getattr(self.template, "_call_has_training_arg", False))
        for m in members:
            if len(m.model.trainable_variables) != len(self.tvars):
                raise ValueError("the networks of the group have different variable counts")

        def stack(get: Callable[[Any], list[Any]]) -> list[Any]:
            per = [[keras.ops.convert_to_numpy(v) for v in get(m.model)] for m in members]
            return [np.stack([p[i] for p in per]) for i in range(len(per[0]))]

        self.svars = [keras.Variable(v, trainable=True, name=f"packed_{i}")
                      for i, v in enumerate(stack(lambda mm: mm.trainable_variables))]
        tensor = keras.ops.convert_to_tensor
        self.ntv = [tensor(v) for v in stack(lambda mm: mm.non_trainable_variables)]
        self.template.reset_metrics()
        self.mv_reset = [tensor(np.stack([keras.ops.convert_to_numpy(v)] * self.k))
                         for v in self.mvars]
        opt_t = self.template.optimizer
        self.optimizer = type(opt_t).from_config(opt_t.get_config())
        self.optimizer.build(self.svars)
        self.start = first.start
        if any(m.job.resume is not None for m in members):
            self._stack_optimizers()
        lrs = [m.lr for m in members]
        self.scale = None
        if all(lr is not None for lr in lrs) and len(set(lrs)) > 1:
            base = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
            self.scale = keras.ops.convert_to_tensor(
                np.asarray([lr / base for lr in lrs]), dtype=self.svars[0].dtype)  # type: ignore[operator]
        #: training / validation batches drawn from each network's source (batches.py)
        #: and stacked per step, else gathered from the stacked (x, y) arrays
        self.stream, self.vstream = first.src is not None, first.vsrc is not None
        if not self.stream:
            self.x, self.x_shared = self._data([m.x for m in members])
            self.y, self.y_shared = self._data([m.y for m in members])
        self.has_val = first.xv is not None
        if self.has_val and not self.vstream:
            self.xv, self.xv_shared = self._data([m.xv for m in members])
            self.yv, self.yv_shared = self._data([m.yv for m in members])
        self.n = int(first.x.shape[0])
        self.nv = int(first.xv.shape[0]) if self.has_val else 0
        #: keras batches validation arrays by fit's batch_size, which a source does not give
        self.vbs = 32 if self.stream else self.bs
        self._copy: Any = None
        if self.jax:
            import jax

            self._jit_train = jax.jit(self._train_step_jax)
            self._jit_test = jax.jit(self._test_step_jax)
            self.results = jax.jit(self._results)
            return
        # No autograph (nothing here branches on tensors; converting costs seconds) and no
        # XLA (jit_compile made a vectorized step ~300x slower on CPU).
        self.train_step = tf.function(self._train_step, reduce_retracing=True, autograph=False)
        self.test_step = tf.function(self._test_step, reduce_retracing=True, autograph=False)
        self.results = tf.function(self._results, autograph=False)

    def _data(self, arrays: list[Any]) -> tuple[Any, bool]:
        """One copy when every network has the same array, else a stacked [K, n, ...]."""
        np, tensor = self.np, self.keras.ops.convert_to_tensor
        first = arrays[0]
        if all(a is first or np.array_equal(a, first) for a in arrays[1:]):
            return tensor(first), True
        return tensor(np.stack(arrays)), False

    def _inputs(self, data: Any, val: bool) -> tuple[Any, Any]:
        """The step's [K, batch, ...] x and y: given stacked (from the sources), or gathered
        (``data`` is then the rows of each network's arrays)."""
        if self.vstream if val else self.stream:
            return data[0], data[1]
        if val:
            return (self._gather(self.xv, self.xv_shared, data),
                    self._gather(self.yv, self.yv_shared, data))
        return (self._gather(self.x, self.x_shared, data),
                self._gather(self.y, self.y_shared, data))

    def _gather(self, data: Any, shared: bool, idx: Any) -> Any:
        """Rows ``idx[k]`` of network k's data: [K, batch, ...]."""
        if self.jax:
            import jax

            if shared:
                return data[idx]
            return jax.vmap(lambda d, i: d[i])(data, idx)
        if shared:
            return self.tf.gather(data, idx)
        return self.tf.gather(data, idx, batch_dims=1)

    # -- per network (traced once, vectorized over the K networks)
    def _forward(self, tv: Any, ntv: Any, mv: Any, x: Any, y: Any, training: bool) -> Any:
        t = self.template
        kwargs = {"training": training} if self.has_training_arg else {}
        y_pred, ntv, losses = t.stateless_call(tv, ntv, x, return_losses=True, **kwargs)
        t._losses_override = list(losses) if losses else []
        try:
            loss, (_, ntv, mv) = t.stateless_compute_loss(
                tv, ntv, mv, x=x, y=y, y_pred=y_pred, sample_weight=None, training=training)
        finally:
            t._losses_override = []
        mv = self._update_metrics(mv, loss, x, y, y_pred)
        return loss, ntv, mv

    def _update_metrics(self, mv: Any, loss: Any, x: Any, y: Any, y_pred: Any) -> list[Any]:
        t = self.template
        mapping = list(zip(self.mvars, mv, strict=True))
        with self.keras.StatelessScope(state_mapping=mapping) as scope:
            # the batch size as a value: a retraced step (a last, shorter batch) has no
            # static one, and keras weighs each batch by its size
            t._loss_tracker.update_state(loss, sample_weight=self.keras.ops.shape(x)[0])
            t.compute_metrics(x, y, y_pred, sample_weight=None)
        out = []
        for ref, old in zip(self.mvars, mv, strict=True):
            new = scope.get_current_value(ref)
            out.append(old if new is None else new)
        return out

    # -- stacked steps
    def _train_step(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        tf, keras = self.tf, self.keras
        xb, yb = self._inputs(data, val=False)
        tv = [tf.convert_to_tensor(v.value) for v in self.svars]

        def one(args: Any) -> Any:
            tv_k, ntv_k, mv_k, x_k, y_k = args
            return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=True)

        with tf.GradientTape() as tape:
            tape.watch(tv)
            losses, new_ntv, new_mv = keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb))
            total = tf.reduce_sum(losses)
        grads = tape.gradient(total, tv)
        missing = sum(1 for g in grads if g is None)
        if missing or len(grads) != len(self.tvars):
            raise ValueError(f"the vectorized step updates {len(grads) - missing} of the model's "
                             f"{len(self.tvars)} trainable variables")
        self.optimizer.apply(grads, self.svars)
        for var, old in zip(self.svars, tv, strict=True):
            new = tf.convert_to_tensor(var.value)
            if self.scale is not None:
                new = old + (new - old) * self._per_net(self.scale, old)
            var.assign(tf.where(self._per_net(active, old), new, old))
        # a network out of batches this step (its source ended) keeps its state and metrics
        return self._keep(active, new_ntv, ntv), self._keep(active, new_mv, mv)

    def _keep(self, active: Any, new: list[Any], old: list[Any]) -> list[Any]:
        where = self.keras.ops.where
        return [where(self._per_net(active, o), n, o) for n, o in zip(new, old, strict=True)]

    def _test_step(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        tf = self.tf
        xb, yb = self._inputs(data, val=True)
        tv = [tf.convert_to_tensor(v.value) for v in self.svars]

        def one(args: Any) -> Any:
            tv_k, ntv_k, mv_k, x_k, y_k = args
            return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=False)[2]

        return self._keep(active, self.keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb)), mv)

    def _train_step_jax(self, tv: list[Any], ov: list[Any], ntv: list[Any], mv: list[Any],
                        active: Any, data: Any) -> Any:
        """The jax twin of _train_step, a pure function: the new (tv, ov, ntv, mv)."""
        import jax
        import jax.numpy as jnp

        xb, yb = self._inputs(data, val=False)

        def total(tv: list[Any]) -> Any:
            def one(args: Any) -> Any:
                tv_k, ntv_k, mv_k, x_k, y_k = args
                return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=True)

            losses, new_ntv, new_mv = self.keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb))
            return jnp.sum(losses), (new_ntv, new_mv)

        # every stacked variable gets a gradient here (zero where none reaches it, as in
        # keras' own jax trainer): tensorflow's missing-gradient guard has no twin
        (_, (new_ntv, new_mv)), grads = jax.value_and_grad(total, has_aux=True)(tv)
        new_tv, new_ov = self.optimizer.stateless_apply(ov, grads, tv)
        out = []
        for new, old in zip(new_tv, tv, strict=True):
            if self.scale is not None:
                new = old + (new - old) * self._per_net(self.scale, old)
            out.append(jnp.where(self._per_net(active, old), new, old))
        return out, list(new_ov), self._keep(active, new_ntv, ntv), self._keep(active, new_mv, mv)

    def _test_step_jax(self, tv: list[Any], ntv: list[Any], mv: list[Any], active: Any,
                       data: Any) -> Any:
        xb, yb = self._inputs(data, val=True)

        def one(args: Any) -> Any:
            tv_k, ntv_k, mv_k, x_k, y_k = args
            return self._forward(tv_k, ntv_k, mv_k, x_k, y_k, training=False)[2]

        return self._keep(active, self.keras.ops.vectorized_map(one, (tv, ntv, mv, xb, yb)), mv)

    def _step(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        """One training step of the group: the new (ntv, mv); the stacked variables and
        the optimizer's hold the new weights and state."""
        if not self.jax:
            return self.train_step(ntv, mv, active, data)
        opt_vars = self.optimizer.variables
        tv, ov, ntv, mv = self._jit_train([v.value for v in self.svars],
                                          [v.value for v in opt_vars], ntv, mv, active, data)
        for var, val in zip(self.svars, tv, strict=True):
            var.assign(val)
        for var, val in zip(opt_vars, ov, strict=True):
            var.assign(val)
        return ntv, mv

    def _evaluate(self, ntv: list[Any], mv: list[Any], active: Any, data: Any) -> Any:
        if not self.jax:
            return self.test_step(ntv, mv, active, data)
        return self._jit_test([v.value for v in self.svars], ntv, mv, active, data)

    def _results(self, mv: list[Any]) -> dict[str, Any]:
        def one(mv_k: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            with self.keras.StatelessScope(state_mapping=list(zip(self.mvars, mv_k, strict=True))):
                for metric in self.template.metrics:
                    r = metric.result()
                    if isinstance(r, dict):
                        out.update(r)
                    else:
                        out[metric.name] = r
            return out

        return self.keras.ops.vectorized_map(one, mv)

    def _per_net(self, v: Any, like: Any) -> Any:
        """A [K] vector shaped to broadcast against a stacked [K, ...] value."""
        return self.keras.ops.reshape(v, [-1] + [1] * (len(like.shape) - 1))

    # -- the epochs
    def train(self, observer: Observer) -> float:
        """Train the group to its last epoch. Checkpoints each network when the schedule
        says so; on a signal, checkpoints the networks still training at their last
        completed epoch, finishes those early stopping froze, and raises TaskInterrupted."""
        np, tensor = self.np, self.keras.ops.convert_to_tensor
        cfg, k, bs = self.cfg, self.k, self.bs
        job0 = self.members[0].job
        rngs = [network_rng(m.job) for m in self.members]
        for _ in range(self.start):  # the same batch order as without a stop
            for r in rngs:
                epoch_order(r, self.n, job0.epoch_samples)
        active = np.ones(k, dtype=bool)
        stoppers = [self._stoppers(m) for m in self.members] if job0.intelligent else None
        epoch_len = self.n if job0.epoch_samples <= 0 else job0.epoch_samples
        steps = math.ceil(epoch_len / bs)
        ntv = self.ntv
        saving = job0.batch_dir is not None and job0.policy.enabled
        pol = job0.policy
        auto = saving and not pol.every_epochs and not pol.every_minutes
        schedule = checkpoint.Schedule(pol, self._expected_checkpoint_seconds() if auto else 0.0)
        done = self.start  # epochs completed
        snapshot: Any = None
        snap_cost, epoch_time = 0.0, math.inf
        start = time.perf_counter()
        try:
            for epoch in range(self.start, cfg.nb_epoch):
                if not active.any():
                    break
                interrupt_check()
                # A signal mid-epoch checkpoints the state at the epoch's start: a copy of it
                # is kept while it costs at most SNAPSHOT_BUDGET of an epoch; in shorter
                # epochs, the epoch is finished first (it takes at most 1/SNAPSHOT_BUDGET
                # copies' time). Neither is needed where the checkpoints hold this epoch.
                wanted = saving and any(m.job.checkpoint_epoch != epoch
                                        for m, a in zip(self.members, active, strict=True) if a)
                snapshot = None
                if wanted and snap_cost <= SNAPSHOT_BUDGET * epoch_time:
                    snapshot, snap_cost = self._snapshot(ntv)
                stop_mid_epoch = snapshot is not None or not wanted
                schedule.epoch_started()
                epoch_start = time.perf_counter()
                active_t = tensor(active)
                mv = self.mv_reset
                if self.stream:
                    ntv, mv = self._stream_epoch(ntv, mv, active, stop_mid_epoch)
                else:
                    order = np.stack([epoch_order(r, self.n, job0.epoch_samples)
                                      for r in rngs]).astype(np.int32)
                    for s in range(steps):
                        idx = tensor(order[:, s * bs:(s + 1) * bs])
                        ntv, mv = self._step(ntv, mv, active_t, idx)
                        if stop_mid_epoch:
                            interrupt_check()
                logs = {key: np.asarray(v) for key, v in self.results(mv).items()}
                if self.has_val:
                    mv = self.mv_reset
                    if self.vstream:
                        mv = self._stream_validation(ntv, mv, active)
                    else:
                        vbs = self.vbs
                        for s in range(math.ceil(self.nv / vbs)):
                            rows = np.arange(s * vbs, min(self.nv, (s + 1) * vbs),
                                             dtype=np.int32)
                            mv = self._evaluate(ntv, mv, active_t,
                                                tensor(np.tile(rows, (k, 1))))
                    logs.update({f"val_{key}": np.asarray(v)
                                 for key, v in self.results(mv).items()})
                was_active = active.copy()
                for i, m in enumerate(self.members):
                    if not was_active[i]:
                        continue
                    for key, v in logs.items():
                        m.history.setdefault(key, []).append(float(v[i]))
                if stoppers is not None:
                    self._put_back(ntv, [i for i in range(k) if was_active[i]])
                    for i, m in enumerate(self.members):
                        if not was_active[i]:
                            continue
                        net_logs = {key: float(v[i]) for key, v in logs.items()}
                        for cb in stoppers[i]:
                            cb.on_epoch_end(epoch, net_logs)
                        if m.model.stop_training:
                            active[i] = False
                for i, m in enumerate(self.members):  # a generator that ended ends training
                    if any(src is not None and src.ended for src in (m.src, m.vsrc)):
                        active[i] = False
                done, snapshot = epoch + 1, None
                epoch_time = time.perf_counter() - epoch_start
                if saving and schedule.due() and done < cfg.nb_epoch and active.any():
                    schedule.saved(self._checkpoint(ntv, [i for i in range(k) if active[i]],
                                                    done, stoppers))
        except StopNow:
            if snapshot is not None:  # back to the last completed epoch
                ntv = self._restore(snapshot)
            self._stop(observer, ntv, done, active, stoppers,
                       time.perf_counter() - start, saving)
        seconds = time.perf_counter() - start
        self._put_back(ntv, list(range(k)))
        if stoppers is not None:
            for cbs in stoppers:
                for cb in cbs:
                    cb.on_train_end()
        return seconds

    def _stream_epoch(self, ntv: list[Any], mv: list[Any], active: Any,
                      stop_mid_epoch: bool) -> Any:
        """One epoch of steps on batches drawn from the networks' sources; a network whose
        source runs out sits the rest of the epoch out (and ends its training, see
        batches.py). With PREFETCH, the next step's batches are drawn in a thread while the
        current step runs. Returns the new (ntv, mv)."""
        srcs = [m.src for m in self.members]
        steps = srcs[0].steps
        live = active.copy()
        its = [s.begin() if live[i] else None for i, s in enumerate(srcs)]
        tensor = self.keras.ops.convert_to_tensor

        def draws() -> Iterator[tuple[Any, Any]]:
            """Each step's (stacked batches, which networks had one)."""
            step = 0
            while steps is None or step < steps:
                xy = self._draw(srcs, its, live)
                if xy is None:
                    return
                if steps is None and not np_equal(live, active):
                    # one pass of each network's dataset an epoch: passes of different
                    # lengths would leave a network out of steps and then back in
                    raise ValueError("the networks' datasets give different numbers of "
                                     "batches a pass")
                yield xy, tensor(live)
                step += 1

        try:
            with _ahead(draws(), PREFETCH) as batches_:
                for xy, live_t in batches_:
                    ntv, mv = self._step(ntv, mv, live_t, xy)
                    if stop_mid_epoch:
                        interrupt_check()
        finally:
            for i, s in enumerate(srcs):
                if its[i] is not None:
                    s.finish()
        return ntv, mv

    def _stream_validation(self, ntv: list[Any], mv: list[Any], active: Any) -> Any:
        srcs = [m.vsrc for m in self.members]
        steps = srcs[0].steps
        live = active.copy()
        its = [s.begin() if live[i] else None for i, s in enumerate(srcs)]
        step = 0
        while steps is None or step < steps:
            xy = self._draw(srcs, its, live)
            if xy is None:
                break
            mv = self._evaluate(ntv, mv, self.keras.ops.convert_to_tensor(live), xy)
            step += 1
        for i, s in enumerate(srcs):
            if its[i] is not None:
                s.finish()
        return mv

    def _draw(self, srcs: list[Any], its: list[Any], live: Any) -> tuple[Any, Any] | None:
        """The next batch of each live network's source, stacked [K, batch, ...] (a network
        not live gets a live one's batch, which its masked step ignores); a network whose
        source ends is no longer live; None when none is left."""
        np, keras = self.np, self.keras
        xs: list[Any] = [None] * self.k
        ys: list[Any] = [None] * self.k
        for i, it in enumerate(its):
            if not live[i]:
                continue
            try:
                batch = srcs[i].draw(it)
            except StopIteration:
                live[i], its[i] = False, None
                continue
            xs[i], ys[i] = _as_array(batch[0], keras), _as_array(batch[1], keras)
        ref = next((i for i in range(self.k) if live[i]), None)
        if ref is None:
            return None
        for i in range(self.k):
            if xs[i] is None:
                xs[i], ys[i] = xs[ref], ys[ref]
            elif (xs[i].shape, ys[i].shape, xs[i].dtype, ys[i].dtype) != \
                    (xs[ref].shape, ys[ref].shape, xs[ref].dtype, ys[ref].dtype):
                raise ValueError(
                    f"network {self.members[i].index}'s batch ({xs[i].shape}, {ys[i].shape}) "
                    f"does not stack with network {self.members[ref].index}'s "
                    f"({xs[ref].shape}, {ys[ref].shape}): packed batches need one shape")
        tensor = keras.ops.convert_to_tensor
        return tensor(np.stack(xs)), tensor(np.stack(ys))

    def _stop(self, observer: Observer, ntv: list[Any], done: int, active: Any,
              stoppers: list[list[Any]] | None, seconds: float, saving: bool) -> None:
        """The task was signalled; ``ntv`` and the stacked variables hold the state after
        ``done`` epochs. Networks still training get a checkpoint there (the sequential
        format: either trainer resumes it) and their runs wait, resumable; networks early
        stopping froze are finished. Raises TaskInterrupted."""
        signum = pending_interrupt()
        assert signum is not None
        if done == self.start:  # nothing trained in this attempt: the checkpoints stand
            raise TaskInterrupted(signum)
        running = [i for i in range(self.k) if active[i]]
        frozen = [i for i in range(self.k) if not active[i]]
        if saving:
            todo = [i for i in running if self.members[i].job.checkpoint_epoch != done]
            if todo:
                self._checkpoint(ntv, todo, done, stoppers)
        if frozen:
            self._put_back(ntv, frozen)
            for i in frozen:
                for cb in stoppers[i] if stoppers is not None else []:
                    cb.on_train_end()
                _finish(self.members[i], observer, seconds / self.k)
        stopped = getattr(observer, "network_interrupted", None)
        for i in running:  # their runs were opened when the group formed
            m = self.members[i]
            for epoch in range(len(next(iter(m.history.values()), []))):
                observer.epoch_end(m.job, epoch, {key: v[epoch] for key, v in m.history.items()
                                                  if epoch < len(v)})
            if callable(stopped):
                stopped(m.job)
        kept = "checkpointed" if saving else "without checkpoints (they start again)"
        say(f"packed group of {self.k} networks stopped by {signal.Signals(signum).name} "
            f"after epoch {done}: {len(running)} {kept}, {len(frozen)} finished")
        raise TaskInterrupted(signum)

    def _checkpoint(self, ntv: list[Any], which: list[int], done: int,
                    stoppers: list[list[Any]] | None) -> float:
        """Write the checkpoints of networks ``which`` after ``done`` epochs, each through
        the sequential path's save_checkpoint; returns the seconds it took."""
        start = time.perf_counter()
        self._put_back(ntv, which, optimizer=True)
        for i in which:
            m = self.members[i]
            progress = EpochProgress(m.job)
            progress.history, progress.epochs = m.history, done
            if stoppers is not None:
                progress.early_stopping = early_stopping_state(stoppers[i][0])
                progress.best_weights = stoppers[i][0].best_weights
            save_checkpoint(m.model, m.job, progress)
        return time.perf_counter() - start

    def _expected_checkpoint_seconds(self) -> float:
        """What one checkpoint of the whole group costs, from one network's model file
        written (and deleted) beforehand: the automatic policy then keeps to its budget from
        the first epoch, where a group of many tiny networks would spend more time on its
        first checkpoint than on training."""
        m = self.members[0]
        assert m.job.batch_dir is not None
        self._optimizer_pairs(m)  # its optimizer built, as a checkpoint has it
        d = checkpoint.directory(m.job.batch_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f".probe.{os.getpid()}.keras"
        start = time.perf_counter()
        try:
            m.model.save(str(path))
        finally:
            path.unlink(missing_ok=True)
        return (time.perf_counter() - start) * self.k

    def _snapshot(self, ntv: list[Any]) -> tuple[Any, float]:
        """A copy of the stacked variables and optimizer state (one compiled call), and the
        seconds the copy took (its tracing, the first time, left out)."""
        if self.jax:  # jax arrays are never changed in place: keeping them is the copy
            return ([v.value for v in self.svars], [v.value for v in self.optimizer.variables],
                    list(ntv)), 0.0
        if self._copy is None:
            tf, opt_vars = self.tf, self.optimizer.variables
            self._copy = tf.function(
                lambda: ([tf.identity(v.value) for v in self.svars],
                         [tf.identity(v.value) for v in opt_vars]), autograph=False)
            self._copy.get_concrete_function()
        start = time.perf_counter()
        tv, ov = self._copy()
        return (list(tv), list(ov), list(ntv)), time.perf_counter() - start

    def _restore(self, snapshot: tuple[list[Any], list[Any], list[Any]]) -> list[Any]:
        tv, ov, ntv = snapshot
        for var, val in zip(self.svars, tv, strict=True):
            var.assign(val)
        for var, val in zip(self.optimizer.variables, ov, strict=True):
            var.assign(val)
        return ntv

    def _optimizer_pairs(self, m: _Member) -> list[tuple[Any, Any, bool]]:
        """(stacked optimizer variable, the network's own, whether stacked) for the state a
        checkpoint keeps: the per-variable slots (sliced) and the step count (shared); the
        network's learning rate stays its own."""
        opt = m.model.optimizer
        if not opt.built:
            opt.build(m.model.trainable_variables)
        ours, theirs = self.optimizer.variables, opt.variables
        if len(ours) != len(theirs):
            raise ValueError(f"the packed optimizer has {len(ours)} variables, the network's "
                             f"{len(theirs)}")
        pairs = []
        for g, v in zip(ours, theirs, strict=True):
            if tuple(g.shape) == (self.k, *tuple(v.shape)):
                pairs.append((g, v, True))
            elif g is self.optimizer.iterations:
                pairs.append((g, v, False))
        return pairs

    def _stack_optimizers(self) -> None:
        """Resumed networks: their optimizers' state (from the checkpoints) stacked."""
        keras, np = self.keras, self.np
        per = [self._optimizer_pairs(m) for m in self.members]
        for j, (g, _, stacked) in enumerate(per[0]):
            values = [keras.ops.convert_to_numpy(p[j][1]) for p in per]
            g.assign(np.stack(values) if stacked else values[0])

    def _stoppers(self, m: _Member) -> list[Any]:
        """The sequential path's early stopping callbacks, bound to the network's own model."""
        keras = self.keras
        es = m.job.config.early_stopping
        monitor = es.get("monitor") or ("val_loss" if self.has_val else "loss")
        mode = es.get("mode", "auto")
        if mode == "auto":
            m.model._symbolic_build(data_batch=(m.x[:self.bs], m.y[:self.bs]))
        cbs = [keras.callbacks.EarlyStopping(
            monitor=monitor, patience=int(es.get("patience", 10)),
            min_delta=float(es.get("min_delta", 0.0)), mode=mode,
            restore_best_weights=bool(es.get("restore_best_weights", True)))]
        if es.get("threshold") is not None:
            cbs.append(threshold_callback(keras, monitor, float(es["threshold"]), mode))
        m.model.stop_training = False
        for cb in cbs:
            cb.set_model(m.model)
            cb.on_train_begin()
        meta = m.job.resume
        if meta is not None and meta.early_stopping:  # as the sequential path resumes it
            resume_callback(keras, cbs[0], meta.early_stopping, m.best).on_train_begin()
        return cbs

    def _put_back(self, ntv: list[Any], which: list[int], optimizer: bool = False) -> None:
        """Assign networks' current stacked values into their own keras models (and, with
        ``optimizer``, the optimizer state into their own optimizers)."""
        if not which:
            return
        numpy = self.keras.ops.convert_to_numpy
        tv_np = [numpy(v) for v in self.svars]
        ntv_np = [numpy(v) for v in ntv]
        opt_np: list[Any] = []
        index: dict[int, int] = {}
        if optimizer:
            opt_np = [self.keras.ops.convert_to_numpy(v) for v in self.optimizer.variables]
            index = {id(v): j for j, v in enumerate(self.optimizer.variables)}
        for i in which:
            model = self.members[i].model
            for var, val in zip(model.trainable_variables, tv_np, strict=True):
                var.assign(val[i])
            for var, val in zip(model.non_trainable_variables, ntv_np, strict=True):
                var.assign(val[i])
            if optimizer:
                for g, v, stacked in self._optimizer_pairs(self.members[i]):
                    val = opt_np[index[id(g)]]
                    v.assign(val[i] if stacked else val)
