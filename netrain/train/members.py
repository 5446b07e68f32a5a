"""The networks of a packed task as the group trains them (:class:`Member`): each built under
its own seed as the sequential path builds it, or from its model's recipe (initial.py), with
its data and the key that says which networks can share a group."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from netrain.errors import TaskInterrupted, pending_interrupt
from netrain.train import batches, initial
from netrain.train.refusal import (
    LINEAR_IN_LR,
    batch_refusal,
    model_refusal,
    optimizer_refusal,
    structure_refusal,
    variables_refusal,
)
from netrain.train.sequential import NetworkJob, is_array_pair, load_checkpoint, materialise


@dataclass
class Member:
    """One network of a group: its job, its weights' values, its data and, where it was
    built in full, its own keras model (None where its values came from its kit's recipe)."""

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
    #: its trainable and non-trainable variables' values (as numpy arrays, in the order of
    #: the model's trainable_variables and non_trainable_variables): its initial ones until
    #: the group puts its trained ones back
    values: list[Any] = field(default_factory=list)
    nt_values: list[Any] = field(default_factory=list)
    kit: Kit | None = None
    optimizer: Any = None  # its own optimizer (the configuration's, as compile makes it)


def as_array(a: Any, keras: Any) -> Any:
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
def kernel_cache_kept(keras: Any) -> Iterator[None]:
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


class Seeder:
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
        with kernel_cache_kept(keras):
            keras.backend.clear_session(free_memory=False)
            keras.utils.set_random_seed(seed)
        self.since_clear.add(key)


class YoungGC:
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


def seed_of(job: NetworkJob) -> int:
    cfg = job.config
    return cfg.seed if cfg.seed is not None else job.seed


class Kit:
    """What the networks of one ``model_generator`` share (see :class:`Builder`): the recipe
    of their initial values (None: each is built in full), whether a second network built in
    full agreed with it, and what the key and the refusal take from the model's structure."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.recipe: initial.Recipe | None = None
        self.built = False  # the first network was built and its recipe recorded
        self.checked = False  # a second network, built in full, agreed with the recipe
        self.arch_json: str | None = None
        self.arch: Any = None
        self.var_key: tuple[Any, ...] = ()
        self.refusal: str | None = None


class Builder:
    """Builds a task's members. The first network of a ``model_generator`` is built in full
    with the recipe of its initial values recorded (initial.py); the second in full too, its
    values compared with the recipe's for its seed; the others from the recipe, without a
    keras model of their own (about 1 ms each instead of 10 or more). Networks that resume,
    start from given weights or whose model has no recipe are built in full."""

    #: distinct generators followed: networks whose generators all differ are built in full
    MAX_KITS = 4

    def __init__(self, keras: Any, seeder: Seeder) -> None:
        self.keras, self.seeder = keras, seeder
        self.kits: list[Kit] = []
        self.optimizers: dict[str, Any] = {}  # an optimizer named by a string, made once

    def __call__(self, index: int, job: NetworkJob) -> Member | str:
        keras, cfg = self.keras, job.config
        if job.resume is not None or job.init_weights is not None:
            return build_member(index, job, keras, self.seeder)
        gen = cfg.model_generator
        kit = next((k for k in self.kits if initial.same_generator(k.generator, gen)), None)
        if kit is None:
            if len(self.kits) >= self.MAX_KITS:
                return build_member(index, job, keras, self.seeder)
            kit = Kit(gen)
            built = build_member(index, job, keras, self.seeder, kit)
            if kit.built:
                self.kits.append(kit)
            return built
        if kit.recipe is None:
            return build_member(index, job, keras, self.seeder, kit)
        if not kit.checked:
            built = build_member(index, job, keras, self.seeder, kit)
            if not isinstance(built, str):
                kit.checked = True
                values, nt_values, _ = kit.recipe.values(keras, seed_of(job))
                if not (_equal(values, built.values) and _equal(nt_values, built.nt_values)):
                    kit.recipe = None
            return built
        return _replay_member(index, job, keras, self.seeder, kit, self.optimizer(cfg.optimizer))

    def optimizer(self, spec: Any) -> Any:
        """The optimizer ``compile`` would make of ``spec`` (one made once for a name)."""
        if isinstance(spec, str):
            if spec not in self.optimizers:
                self.optimizers[spec] = self.keras.optimizers.get(spec)
            return self.optimizers[spec]
        return self.keras.optimizers.get(spec)


def _equal(a: list[Any], b: list[Any]) -> bool:
    import numpy as np

    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def build_member(index: int, job: NetworkJob, keras: Any,
                  seeder: Seeder | None = None, kit: Kit | None = None) -> Member | str:
    """Build a network exactly as train_one does; a str return is why it cannot be packed.
    The first network of a ``kit`` is built with the recipe of its initial values recorded
    (initial.record: the same values), and the kit takes what the key needs from it."""
    cfg = job.config
    seeder = seeder or Seeder()
    seed = seed_of(job)
    seeder(keras, seed)
    model = None
    recording = kit is not None and not kit.built
    if recording:
        assert kit is not None
        model, kit.recipe = initial.record(keras, cfg.model_generator, seed)
        if model is None:  # built again as train_one builds it
            seeder(keras, seed)
    if model is None:
        model = cfg.model_generator()
    if not hasattr(model, "fit") or not hasattr(model, "compile"):
        return f"model_generator returned {type(model).__name__}, not a keras model"
    if job.init_weights is not None and job.resume is None:
        model.load_weights(str(job.init_weights))
    model.compile(optimizer=cfg.optimizer, loss=cfg.loss, metrics=list(cfg.metrics) or None)
    resuming = job.resume is not None and job.batch_dir is not None
    start_epoch = job.resume.epoch if resuming and job.resume is not None else 0
    data = _member_data(job, keras, start_epoch)
    if isinstance(data, str):
        return data
    x, y = data[0], data[1]
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
    arch_json, arch = _architecture(model, cfg)
    var_key = (tuple((tuple(v.shape), str(v.dtype)) for v in model.trainable_variables),
               tuple((tuple(v.shape), str(v.dtype)) for v in model.non_trainable_variables))
    if recording:
        assert kit is not None
        kit.built = True
        kit.arch_json, kit.arch, kit.var_key = arch_json, arch, var_key
        kit.refusal = structure_refusal(model, keras) or variables_refusal(model)
    key, lr = _member_key(job, arch, var_key, model.optimizer, data, start, iterations)
    numpy = keras.ops.convert_to_numpy
    return Member(index=index, job=job, model=model, x=x, y=y, xv=data[2], yv=data[3], lr=lr,
                   key=key, history=history, arch_json=arch_json, start=start, best=best,
                   src=data[4], vsrc=data[5], kit=kit, optimizer=model.optimizer,
                   values=[numpy(v) for v in model.trainable_variables],
                   nt_values=[numpy(v) for v in model.non_trainable_variables])


def _replay_member(index: int, job: NetworkJob, keras: Any, seeder: Seeder, kit: Kit,
                   optimizer: Any) -> Member | str:
    """A network of ``kit`` without a keras model of its own: its initial values from the
    kit's recipe under its seed, every random generator left as building it would leave
    them (its data is made next, and may draw from them)."""
    import random

    seed = seed_of(job)
    seeder(keras, seed)
    assert kit.recipe is not None
    values, nt_values, py_state = kit.recipe.values(keras, seed)
    random.setstate(py_state)  # the draws its model's layers would have made
    data = _member_data(job, keras, 0)
    if isinstance(data, str):
        return data
    why = kit.refusal or optimizer_refusal(optimizer)
    if why:
        return why
    key, lr = _member_key(job, kit.arch, kit.var_key, optimizer, data, 0, 0)
    return Member(index=index, job=job, model=None, x=data[0], y=data[1], xv=data[2],
                   yv=data[3], lr=lr, key=key, arch_json=kit.arch_json, src=data[4],
                   vsrc=data[5], values=values, nt_values=nt_values, kit=kit,
                   optimizer=optimizer)


def _member_data(job: NetworkJob, keras: Any, start_epoch: int) -> tuple[Any, ...] | str:
    """A network's (x, y, xv, yv, src, vsrc): its arrays, or its sources' streams and their
    first batches (see :class:`Member`); a str is why they cannot be packed."""
    cfg = job.config
    bs = cfg.batch_size or 32
    d = materialise(cfg.training_generator)
    src = vsrc = None
    rng_state = _GlobalRandom()
    before = _GlobalRandom.fingerprint()
    if is_array_pair(d):
        x, y = as_array(d[0], keras), as_array(d[1], keras)
        samples = len(x) if job.epoch_samples <= 0 else job.epoch_samples
        train_steps: int | None = math.ceil(samples / bs)
    else:  # the order of draws is train_one's: this first batch, then the evaluation's
        src = batches.open_stream(d, training=True, epoch_samples=job.epoch_samples,
                                  seed=seed_of(job), start_epoch=start_epoch)
        _peeked(job, "training_generator", cfg.training_generator, src)
        why = batch_refusal(src.first, "training_generator")
        if why:
            return why
        x, y = as_array(src.first[0], keras), as_array(src.first[1], keras)
        train_steps = src.steps
    xv = yv = None
    if cfg.evaluation_generator is not None:
        v = materialise(cfg.evaluation_generator)
        if is_array_pair(v):
            xv, yv = as_array(v[0], keras), as_array(v[1], keras)
        else:
            vsteps = cfg.validation_steps
            if not (batches.is_dataset(v) or batches.is_pydataset(v)):
                vsteps = vsteps or max(1, math.ceil((train_steps or 4) / 4))
            vsrc = batches.open_stream(v, training=False, steps=vsteps,
                                       start_epoch=start_epoch)
            _peeked(job, "evaluation_generator", cfg.evaluation_generator, vsrc)
            why = batch_refusal(vsrc.first, "evaluation_generator")
            if why:
                return why
            xv, yv = as_array(vsrc.first[0], keras), as_array(vsrc.first[1], keras)
    if _GlobalRandom.fingerprint() != before:
        # its first batches drew from numpy's or Python's global generator: from now on
        # its draws get the state as this network left it (~0.2 ms a draw, so only then)
        rng_state.keep()
        for stream in (src, vsrc):
            if stream is not None:
                stream.random = rng_state
    return x, y, xv, yv, src, vsrc


def _architecture(model: Any, cfg: Any) -> tuple[str | None, Any]:
    """The model's ``to_json()`` (None without one) and what of it the key compares."""
    try:
        arch_json = model.to_json()
        arch: Any = json.loads(arch_json)
        arch.pop("compile_config", None)  # the optimizer is compared by the key
        return arch_json, json.dumps(arch, sort_keys=True)
    except Exception:  # a subclassed model without get_config: its class and params
        return None, (type(model).__qualname__, sorted(cfg.params.items()))


def _member_key(job: NetworkJob, arch: Any, var_key: tuple[Any, ...], optimizer: Any,
                data: tuple[Any, ...], start: int, iterations: int
                ) -> tuple[tuple[Any, ...], float | None]:
    """What must be equal for networks to share a group, and the network's learning rate
    where the group may differ in it (None: it is part of the key)."""
    cfg = job.config
    conf = dict(optimizer.get_config())
    conf.pop("name", None)
    lr_conf = conf.pop("learning_rate", None)
    lr: float | None = None
    if isinstance(lr_conf, (int, float)) and type(optimizer).__name__ in LINEAR_IN_LR:
        lr = float(lr_conf)
    else:
        conf["learning_rate"] = lr_conf  # a schedule: must be the same for the group
    x, y, xv, yv, src, vsrc = data
    key = (
        arch, *var_key,
        type(optimizer).__name__, repr(sorted(conf.items())),
        _describe(cfg.loss), tuple(_describe(m) for m in cfg.metrics),
        cfg.batch_size, cfg.nb_epoch, job.epoch_samples, job.intelligent,
        repr(sorted(cfg.early_stopping.items())),
        _data_key(src, x, y),
        None if xv is None else _data_key(vsrc, xv, yv),
        # a group resumes together: the same epoch, the same optimizer step, one policy
        start, iterations, job.policy, job.batch_dir is None,
    )
    return key, lr


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


def reraise_interrupt(exc: BaseException) -> None:
    signum = pending_interrupt()
    if signum is not None:
        raise TaskInterrupted(signum) from exc
