"""Keras training of one array task's networks, one after another, with checkpoints,
exact resume and stopping soon after a signal (packed.py trains them together).

The interface is "train these networks of this model" (:func:`train_networks`), not one
network at a time, so a packed trainer can replace the sequential loop without touching
the rest of netrain. What both trainers share (the interrupt check, epoch progress,
checkpoint loading, the threshold and resume callbacks, data materialising) is public here
and imported by packed.py; neither imports the other's private names.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netrain.define import checkpoint
from netrain.define.batch import network_files
from netrain.define.contract import NetworkConfig
from netrain.errors import ContractError, TaskInterrupted, pending_interrupt
from netrain.train import batches, h5weights

GC_EVERY = 16
#: The share of an epoch's time a copy of the training state (a network's, or a packed
#: group's, kept so that a signal mid-epoch goes back to the epoch's start) may cost; in
#: shorter epochs a signal finishes the epoch. Both trainers keep to it.
SNAPSHOT_BUDGET = 0.01


@dataclass
class NetworkJob:
    """One network to train: its validated configuration and where its files go."""

    net_index: int
    model_key: str
    config: NetworkConfig
    seed: int
    stem: str
    epoch_samples: int
    intelligent: bool
    init_weights: Path | None = None
    key: str = ""  # tracking key: the same key is always the same MLflow run
    batch_dir: Path | None = None  # where checkpoints go (None: no checkpoints)
    policy: checkpoint.Policy = field(default_factory=checkpoint.Policy)
    resume: checkpoint.Meta | None = None  # resume from this checkpoint
    #: set while training: epochs saved in the network's latest checkpoint
    checkpoint_epoch: int = 0
    checkpoint_seconds: list[float] = field(default_factory=list)

    @property
    def weights_path(self) -> Path:
        return self.config.wpath / network_files(self.stem)[0]

    @property
    def arch_path(self) -> Path:
        return self.config.archpath / network_files(self.stem)[1]

    @property
    def metrics_path(self) -> Path:
        return self.config.metricspath / network_files(self.stem)[2]


@dataclass
class NetworkResult:
    net_index: int
    epochs: int
    history: dict[str, list[float]]
    seconds: float
    stopped_early: bool
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items() if v}


class Observer(Protocol):
    """What the task wants to hear while its networks train (tracking, records). An observer
    may also have ``network_interrupted(job)``: the packed trainer, stopped by a signal, calls
    it for each network of its group that keeps a checkpoint (its run then waits, resumable),
    and ``batched()``, a block around a group's many events at once (its record writes
    coalesce)."""

    def network_started(self, job: NetworkJob) -> None: ...
    def epoch_end(self, job: NetworkJob, epoch: int, logs: dict[str, float]) -> None: ...
    def network_finished(self, job: NetworkJob, result: NetworkResult) -> None: ...
    def network_failed(self, index: int, job: NetworkJob | None, exc: BaseException) -> None: ...


def train_networks(
    indices: Sequence[int],
    make_job: Callable[[int], NetworkJob],
    observer: Observer,
) -> list[NetworkResult | None]:
    """Train each network in turn; a failing network is reported and the next one goes on.

    ``TaskInterrupted`` (a signal) is not caught: the network in training has written its
    checkpoint, and the task leaves its runs resumable.
    """
    import keras

    results: list[NetworkResult | None] = []
    for count, index in enumerate(indices, start=1):
        job: NetworkJob | None = None
        signum = pending_interrupt()
        if signum is not None:  # signalled between networks: stop before the next one
            raise TaskInterrupted(signum)
        try:
            job = make_job(index)
            observer.network_started(job)
            result = train_one(job, observer, keras)
            observer.network_finished(job, result)
            results.append(result)
        except Exception as exc:
            signum = pending_interrupt()
            if signum is not None:  # the task was signalled; TF wrapped our exception
                raise TaskInterrupted(signum) from exc
            observer.network_failed(index, job, exc)
            results.append(None)
        finally:
            # Reset keras' global state between networks so a task of many networks does
            # not grow; the garbage collection it would also run costs ~0.4 s, so it runs
            # only every GC_EVERY networks (measured in BENCHMARKS.md).
            keras.backend.clear_session(free_memory=count % GC_EVERY == 0)
    return results


class _Relay:
    """Build a keras callback that forwards epoch ends to the observer."""

    @staticmethod
    def make(keras: Any, job: NetworkJob, observer: Observer) -> Any:
        class Relay(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                observer.epoch_end(job, epoch, {k: float(v) for k, v in (logs or {}).items()
                                                 if _is_number(v)})

        return Relay()


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def threshold_callback(keras: Any, monitor: str, threshold: float, mode: str) -> Any:
    class Threshold(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None:
                return
            if (mode == "max" and value >= threshold) or (mode != "max" and value <= threshold):
                self.model.stop_training = True

    return Threshold()


class StopNow(Exception):
    """Raised from a callback at a batch boundary once the task was signalled."""


def interrupt_check() -> None:
    if pending_interrupt() is not None:
        raise StopNow()


class EpochProgress:
    """The network's state as training goes: full history (earlier attempts included),
    epochs completed, and the early-stopping state at the last completed epoch."""

    def __init__(self, job: NetworkJob) -> None:
        meta = job.resume
        self.history: dict[str, list[float]] = {
            k: list(v) for k, v in (meta.history if meta else {}).items()}
        self.epochs = meta.epoch if meta else 0
        self.early_stopping: dict[str, Any] = dict(meta.early_stopping) if meta else {}
        self.best_weights: list[Any] | None = None


def _guard_callback(keras: Any, job: NetworkJob, progress: EpochProgress, stopper: Any,
                    schedule: checkpoint.Schedule) -> Any:
    class Guard(keras.callbacks.Callback):
        """Stops on a signal where the model holds a state a checkpoint can resume exactly;
        checkpoints when due.

        A signal mid-epoch goes back to the epoch's start: a copy of the state there (model
        and optimizer variables, seed generators included) is kept while it costs at most
        SNAPSHOT_BUDGET of an epoch (measured per network); in shorter epochs the signal
        finishes the epoch first (at most 1/SNAPSHOT_BUDGET copies' time). Neither is
        needed where the checkpoint already holds the epoch's start: training just stops.
        """

        def __init__(self) -> None:
            super().__init__()
            self.snapshot: list[Any] | None = None
            self.snap_cost = 0.0
            self.epoch_time = math.inf
            self.epoch_start = 0.0
            self.in_epoch = False  # a batch of the current epoch may have been trained
            self.stop_mid_epoch = True

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            interrupt_check()
            saving = job.batch_dir is not None and job.policy.enabled
            wanted = saving and job.checkpoint_epoch != epoch
            self.snapshot = None
            if wanted and self.snap_cost <= SNAPSHOT_BUDGET * self.epoch_time:
                if not self.snap_cost:  # the first copy's cost is mostly warming up
                    snapshot_state(self.model)
                self.snapshot, self.snap_cost = snapshot_state(self.model)
            self.stop_mid_epoch = self.snapshot is not None or not wanted
            self.in_epoch = True
            schedule.epoch_started()
            self.epoch_start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.stop_mid_epoch:
                interrupt_check()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.in_epoch, self.snapshot = False, None
            self.epoch_time = time.perf_counter() - self.epoch_start
            for k, v in (logs or {}).items():
                if _is_number(v):
                    progress.history.setdefault(k, []).append(float(v))
            progress.epochs = epoch + 1
            if stopper is not None:
                progress.early_stopping = early_stopping_state(stopper)
                progress.best_weights = stopper.best_weights
            if job.batch_dir is not None and schedule.due() and progress.epochs < \
                    job.config.nb_epoch:
                schedule.saved(save_checkpoint(self.model, job, progress))

        def settle(self) -> bool:
            """After a stop: put the epoch's start back if the stop came mid-epoch. True
            when the model then holds the state after ``progress.epochs`` epochs."""
            if not self.in_epoch:
                return True
            if self.snapshot is None:
                return False
            restore_state(self.model, self.snapshot)
            self.in_epoch, self.snapshot = False, None
            return True

    return Guard()


def _state_variables(model: Any) -> list[Any]:
    """The variables a rollback restores: the model's (seed generators' included) and its
    optimizer's."""
    return h5weights.with_optimizer(model, list(model.variables))


def snapshot_state(model: Any) -> tuple[list[Any], float]:
    """A copy of the model's and optimizer's variables, and the seconds it took."""
    import keras
    import numpy as np

    start = time.perf_counter()
    values = [np.array(keras.ops.convert_to_numpy(v.value), copy=True)
              for v in _state_variables(model)]
    return values, time.perf_counter() - start


def restore_state(model: Any, values: list[Any]) -> None:
    variables = _state_variables(model)
    if len(variables) != len(values):  # the optimizer built variables since the copy
        raise RuntimeError(f"the state copy has {len(values)} variables, the model "
                           f"{len(variables)}")
    for var, value in zip(variables, values, strict=True):
        var.assign(value)


def seed_variables(model: Any) -> list[Any]:
    """The states of the model's keras.random.SeedGenerator objects (Dropout's and any
    seeded random layer's): the model's variables that are not weights. Keras' model file
    does not keep them (a loaded model's generators start again from ``[seed, 0]``)."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def seed_states(model: Any) -> list[list[int]]:
    import keras

    return [[int(x) for x in keras.ops.convert_to_numpy(v).reshape(-1)]
            for v in seed_variables(model)]


def set_seed_states(model: Any, states: list[list[int]]) -> None:
    import numpy as np

    variables = seed_variables(model)
    if len(variables) != len(states):
        raise ValueError(f"the checkpoint holds {len(states)} random seed generator states, "
                         f"the model has {len(variables)}: it is not this model's checkpoint")
    for var, state in zip(variables, states, strict=True):
        var.assign(np.asarray(state, dtype=str(var.dtype)).reshape(tuple(var.shape)))


def early_stopping_state(stopper: Any) -> dict[str, Any]:
    """What a checkpoint keeps of an EarlyStopping callback (its best weights go beside)."""
    return {"wait": int(stopper.wait), "best": _plain(stopper.best),
            "best_epoch": int(getattr(stopper, "best_epoch", 0) or 0)}


def resume_callback(keras: Any, stopper: Any, state: dict[str, Any],
                     best: list[Any] | None) -> Any:
    class Restore(keras.callbacks.Callback):
        """Put the early-stopping state of the checkpoint back after Keras reset it."""

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if best is not None:
                stopper.best_weights = best
            if "wait" in state:
                stopper.wait = int(state["wait"])
            if state.get("best") is not None:
                stopper.best = float(state["best"])
            if "best_epoch" in state:
                stopper.best_epoch = int(state["best_epoch"])

    return Restore()


def early_stopping_callbacks(keras: Any, job: NetworkJob, has_validation: bool,
                             best: list[Any] | None) -> list[Any]:
    """A network's early stopping as both trainers set it up: keras' EarlyStopping (first)
    from the configuration's ``early_stopping`` settings, then, for a network resuming, its
    checkpoint's state (and ``best`` weights) put back after EarlyStopping's reset, then the
    ``threshold``'s stop where one is set."""
    es = job.config.early_stopping
    monitor = es.get("monitor") or ("val_loss" if has_validation else "loss")
    mode = es.get("mode", "auto")
    stopper = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=int(es.get("patience", 10)),
        min_delta=float(es.get("min_delta", 0.0)), mode=mode,
        restore_best_weights=bool(es.get("restore_best_weights", True)),
    )
    out = [stopper]
    if job.resume is not None and job.resume.early_stopping:
        out.append(resume_callback(keras, stopper, job.resume.early_stopping, best))
    if es.get("threshold") is not None:
        out.append(threshold_callback(keras, monitor, float(es["threshold"]), mode))
    return out


def _plain(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def save_checkpoint(model: Any, job: NetworkJob, progress: EpochProgress) -> float:
    """Write the network's checkpoint after ``progress.epochs`` whole epochs: the .keras
    model (optimizer state included) and its metadata (with the random seed generators'
    states, which the model file does not keep); early stopping's best weights beside it
    when they will be restored."""
    assert job.batch_dir is not None
    best = progress.best_weights

    def write(path: Path) -> None:
        model.save(str(path))
        if best is not None:
            import numpy as np

            with open(path.with_name(path.name + checkpoint.BEST_SUFFIX), "wb") as fh:
                np.savez(fh, *best)

    meta = checkpoint.Meta(key=job.key, stem=job.stem, epoch=progress.epochs,
                           history=progress.history, early_stopping=progress.early_stopping,
                           seed=job.seed, seed_states=seed_states(model))
    seconds = checkpoint.commit(job.batch_dir, meta, write)
    job.checkpoint_epoch = progress.epochs
    job.checkpoint_seconds.append(seconds)
    return seconds


def load_checkpoint(model: Any, job: NetworkJob, fit_kwargs: dict[str, Any]
                     ) -> list[Any] | None:
    """Load the checkpoint into the compiled model (weights, optimizer state, the random
    seed generators' states); return early stopping's best weights when the checkpoint has
    them."""
    meta = job.resume
    assert meta is not None and job.batch_dir is not None
    if not model.built:
        _build_on_data(model, fit_kwargs)
    model.optimizer.build(model.trainable_variables)
    path = checkpoint.model_file(job.batch_dir, meta)
    model.load_weights(str(path))
    if meta.seed_states:
        set_seed_states(model, meta.seed_states)
    best = path.with_name(path.name + checkpoint.BEST_SUFFIX)
    if not best.is_file():
        return None
    import numpy as np

    with np.load(best) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _build_on_data(model: Any, fit_kwargs: dict[str, Any]) -> None:
    x: Any = fit_kwargs.get("x")
    if hasattr(x, "__getitem__") and hasattr(x, "on_epoch_end"):
        x = x[0][0]
    elif x is not None and not hasattr(x, "shape"):
        return
    if x is not None:
        model(x[:1])


def train_one(job: NetworkJob, observer: Observer, keras: Any) -> NetworkResult:
    cfg = job.config
    seed = cfg.seed if cfg.seed is not None else job.seed
    keras.utils.set_random_seed(seed)
    model = cfg.model_generator()
    if not hasattr(model, "fit") or not hasattr(model, "compile"):
        raise ContractError(f"{job.model_key}: model_generator returned "
                            f"{type(model).__name__}, not a keras model")
    if job.init_weights is not None and job.resume is None:
        model.load_weights(str(job.init_weights))
    model.compile(optimizer=cfg.optimizer, loss=cfg.loss, metrics=list(cfg.metrics) or None)

    start_epoch = job.resume.epoch if job.resume else 0
    fit_kwargs = training_inputs(cfg.training_generator, job.epoch_samples, cfg.batch_size,
                                 job.model_key, start_epoch=start_epoch, seed=seed)
    has_validation = cfg.evaluation_generator is not None
    if has_validation:
        fit_kwargs.update(validation_inputs(cfg.evaluation_generator, cfg.validation_steps,
                                            fit_kwargs, job.model_key, start_epoch))
    streams = (fit_kwargs.pop(STREAM, None), fit_kwargs.pop(VSTREAM, None))

    restored_best = None
    if job.resume is not None:
        restored_best = load_checkpoint(model, job, fit_kwargs)
        job.checkpoint_epoch = job.resume.epoch
    callbacks: list[Any] = [_Relay.make(keras, job, observer)]
    if streams[1] is not None:
        callbacks.insert(0, _validation_callback(keras, streams[1]))
    if streams[0] is not None and streams[0].kind == "generator":
        callbacks.append(_source_end_callback(keras, streams[0]))
    stopper = None
    if job.intelligent:
        stopping = early_stopping_callbacks(keras, job, has_validation, restored_best)
        stopper = stopping[0]
        callbacks.extend(stopping)
    user_cb = cfg.callbacks() if callable(cfg.callbacks) else cfg.callbacks
    callbacks.extend(list(user_cb or []))
    progress = EpochProgress(job)
    guard = _guard_callback(keras, job, progress, stopper, checkpoint.Schedule(job.policy))
    callbacks.append(guard)

    if job.resume is not None:
        keras.utils.set_random_seed(seed + start_epoch)  # a fresh shuffle for the rest

    start = time.perf_counter()
    try:
        interrupt_check()
        if start_epoch < cfg.nb_epoch:
            model.fit(epochs=cfg.nb_epoch, initial_epoch=start_epoch, callbacks=callbacks,
                      verbose=cfg.verbose, **fit_kwargs)
    except Exception as exc:
        signum = pending_interrupt()
        if signum is None:
            raise
        # stopped at a batch boundary (or TF wrapped our stop): back at the last completed
        # epoch, it is checkpointed unless the checkpoint holds it already; stopped mid-epoch
        # without a copy of its start (only another exception than the guard's can do
        # that), the last checkpoint stands: a checkpoint always resumes exactly
        if guard.settle() and job.batch_dir is not None and job.policy.enabled \
                and job.checkpoint_epoch != progress.epochs:
            save_checkpoint(model, job, progress)
        raise TaskInterrupted(signum) from exc
    seconds = time.perf_counter() - start
    hist = progress.history
    epochs = progress.epochs
    files = save_network(model, job, hist)
    if job.batch_dir is not None and not job.policy.keep:
        checkpoint.remove(job.batch_dir, job.stem)
    return NetworkResult(
        net_index=job.net_index, epochs=epochs, history=hist, seconds=seconds,
        stopped_early=epochs < cfg.nb_epoch, files=files,
    )


def save_network(model: Any, job: NetworkJob, hist: dict[str, list[float]],
                 arch_json: str | None = None) -> dict[str, Path]:
    """Weights, architecture (``arch_json``: the model's ``to_json()`` where the caller has
    it) and metrics, each written to a temporary name then renamed."""
    for d in (job.config.wpath, job.config.archpath, job.config.metricspath):
        d.mkdir(parents=True, exist_ok=True)
    wtmp = job.weights_path.with_name(f".{job.stem}.{os.getpid()}.tmp.weights.h5")
    arch = arch_json if arch_json is not None else model.to_json()
    h5weights.save_weights(model, wtmp, arch)
    os.replace(wtmp, job.weights_path)
    atmp = job.arch_path.with_name(f".{job.stem}.{os.getpid()}.tmp.json")
    atmp.write_text(arch, encoding="utf-8")
    os.replace(atmp, job.arch_path)
    mtmp = job.metrics_path.with_name(f".{job.stem}.{os.getpid()}.tmp.csv")
    write_metrics_csv(mtmp, hist)
    os.replace(mtmp, job.metrics_path)
    return {"weights": job.weights_path, "arch": job.arch_path, "metrics": job.metrics_path}


def write_metrics_csv(path: Path, hist: dict[str, list[float]]) -> None:
    keys = list(hist)
    n = max((len(v) for v in hist.values()), default=0)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", *keys])
        for i in range(n):
            w.writerow([i, *(hist[k][i] if i < len(hist[k]) else "" for k in keys)])


# ---------------------------------------------------------------------------- data handling

def is_array_pair(d: Any) -> bool:
    return isinstance(d, (tuple, list)) and len(d) in (2, 3) and all(
        hasattr(p, "__len__") and not isinstance(p, (str, bytes)) for p in d[:2]
    )


def materialise(d: Any) -> Any:
    """Call a data *function* (the seed's "generator function") to get the data itself."""
    if callable(d) and not hasattr(d, "__next__") and not hasattr(d, "__getitem__") \
            and not hasattr(d, "element_spec"):
        return d()
    return d


def _batch_len(batch: Any, model_key: str, what: str) -> int:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ContractError(f"{model_key}: {what} yielded {type(batch).__name__}, not an "
                            "(x, y) tuple: yield (x_batch, y_batch)")
    x, y = batch[0], batch[1]
    nx = _first_dim(x)
    ny = _first_dim(y)
    if nx is None or ny is None or nx != ny or nx == 0:
        raise ContractError(f"{model_key}: {what} yielded x and y with {nx} and {ny} rows: "
                            "they must be equal and non-zero")
    return nx


def _first_dim(a: Any) -> int | None:
    if isinstance(a, dict):
        a = next(iter(a.values()), None)
    elif isinstance(a, (list, tuple)) and a and hasattr(a[0], "shape"):
        a = a[0]
    shape = getattr(a, "shape", None)
    if shape is not None and len(shape) > 0 and shape[0] is not None:
        return int(shape[0])
    try:
        return len(a)
    except TypeError:
        return None


def training_inputs(data: Any, epoch_samples: int, batch_size: int | None,
                    model_key: str, start_epoch: int = 0, seed: int = 0) -> dict[str, Any]:
    """keras ``fit`` arguments so that one epoch sees ``epoch_samples`` samples (the
    reshuffled sampler positioned at ``start_epoch`` when a network resumes)."""
    d = materialise(data)
    bs = batch_size or 32
    if is_array_pair(d):
        x, y = d[0], d[1]
        n = _batch_len(d, model_key, "training_generator")
        plain = hasattr(x, "shape") and hasattr(y, "shape")  # not dicts or lists of inputs
        if len(d) == 3 or (not plain and epoch_samples in (0, n)):
            # sample weights or several inputs: Keras serves and shuffles them
            out: dict[str, Any] = {"x": x, "y": y, "batch_size": bs, "shuffle": True}
            if len(d) == 3:
                out["sample_weight"] = d[2]
            return out
        # the network's own batch order, from its seed: the same with or without --pack,
        # and the same after a resume
        samples = n if epoch_samples <= 0 else epoch_samples
        return {"x": ArraySampler.make(x, y, bs, samples, start_epoch, seed),
                "steps_per_epoch": ArraySampler.steps(bs, samples), "shuffle": False}
    if hasattr(d, "element_spec"):  # tf.data.Dataset
        first = next(iter(d))
        n = _batch_len(first, model_key, "training_generator")
        steps = max(1, math.ceil(epoch_samples / n)) if epoch_samples > 0 else None
        if not steps:
            return {"x": d, "steps_per_epoch": None}
        # repeated: a resumed network skips the batches of the epochs it has trained
        return {"x": d.repeat().skip(start_epoch * steps) if start_epoch else d.repeat(),
                "steps_per_epoch": steps}
    if batches.is_pydataset(d) and not pydataset_workers(d):
        # A keras PyDataset defines its own epoch (len(d) batches), served in an order drawn
        # per epoch from the network's seed (batches.py): the same with or without --pack
        s = batches.open_stream(d, training=True, seed=seed, start_epoch=start_epoch)
        _batch_len(s.first, model_key, "training_generator")
        return {"x": s.endless(), "steps_per_epoch": s.steps, "shuffle": False, STREAM: s}
    if batches.is_pydataset(d):  # with workers: keras' own enqueuer serves it
        _batch_len(d[0], model_key, "training_generator")
        return {"x": d}
    if hasattr(d, "__iter__") or hasattr(d, "__next__"):
        try:
            s = batches.open_stream(d, training=True, epoch_samples=epoch_samples,
                                    start_epoch=start_epoch)
        except ValueError:
            raise ContractError(f"{model_key}: training_generator yielded nothing: it must "
                                "yield (x, y) batches") from None
        _batch_len(s.first, model_key, "training_generator")
        return {"x": s.endless(), "steps_per_epoch": s.steps, "shuffle": False, STREAM: s}
    raise ContractError(f"{model_key}: training_generator of type {type(d).__name__} is not "
                        "usable: give (x, y) arrays, a generator, a PyDataset or a Dataset")


def validation_inputs(data: Any, validation_steps: int | None, fit_kwargs: dict[str, Any],
                      model_key: str, start_epoch: int = 0) -> dict[str, Any]:
    d = materialise(data)
    if is_array_pair(d):
        _batch_len(d, model_key, "evaluation_generator")
        return {"validation_data": tuple(d)}
    if hasattr(d, "element_spec"):
        return {"validation_data": d, "validation_steps": validation_steps}
    if hasattr(d, "__getitem__") and hasattr(d, "__len__") and hasattr(d, "on_epoch_end"):
        return {"validation_data": d, "validation_steps": validation_steps}
    if hasattr(d, "__iter__") or hasattr(d, "__next__"):
        steps = validation_steps or max(1, math.ceil((fit_kwargs.get("steps_per_epoch") or 4) / 4))
        try:
            s = batches.open_stream(d, training=False, steps=steps, start_epoch=start_epoch)
        except ValueError:
            raise ContractError(f"{model_key}: evaluation_generator yielded nothing: it must "
                                "yield (x, y) batches") from None
        _batch_len(s.first, model_key, "evaluation_generator")
        # validated by train_one's callback, not by fit: keras evaluates a generator from a
        # fresh iterator each epoch, which replays the batches it peeked
        return {VSTREAM: s}
    raise ContractError(f"{model_key}: evaluation_generator of type {type(d).__name__} is not "
                        "usable: give (x, y) arrays, a generator, a PyDataset or a Dataset")


#: fit_kwargs keys (taken out before fit) for the training and evaluation batches.Stream
STREAM, VSTREAM = "netrain_stream", "netrain_vstream"


def pydataset_workers(d: Any) -> bool:
    """A PyDataset keras reads with its own workers (threads or processes)."""
    workers = getattr(d, "workers", 1) or 0
    return workers > 1 or bool(workers and getattr(d, "use_multiprocessing", False))


def _source_end_callback(keras: Any, stream: Any) -> Any:
    class SourceEnd(keras.callbacks.Callback):
        """Ends training with the epoch in which its generator ended (batches.py): once
        every batch it gave (keras reads ahead) has been trained."""

        def __init__(self) -> None:
            super().__init__()
            self.trained = 0

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.trained += 1

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if stream.ended and self.trained >= stream.reader.drawn:
                self.model.stop_training = True

    return SourceEnd()


def _validation_callback(keras: Any, vstream: Any) -> Any:
    class Validate(keras.callbacks.Callback):
        """Validation from an evaluation generator, first of the epoch's callbacks: the
        epoch's next ``vstream.steps`` batches, their ``val_*`` results put into the
        epoch's logs (which the callbacks after it share); training ends with the epoch in
        which the generator ended."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            got = list(vstream.epoch())
            if got:
                res = self.model.evaluate(x=(b for b in got), steps=len(got), verbose=0,
                                          return_dict=True)
                if logs is not None:
                    logs.update({f"val_{k}": v for k, v in res.items()})
            if vstream.ended:
                self.model.stop_training = True

    return Validate()


def epoch_order(rng: Any, n: int, epoch_samples: int) -> Any:
    """The sample indices of one epoch, drawn from the network's ``rng``: a permutation of
    the ``n`` samples or, when ``epoch_samples`` is another positive count, that many from
    repeated permutations. Both trainers draw each epoch's order here, so a network sees the
    same batches with or without --pack."""
    import numpy as np

    if epoch_samples <= 0 or epoch_samples == n:
        return rng.permutation(n)
    reps = math.ceil(epoch_samples / n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:epoch_samples]


class ArraySampler:
    """(x, y) arrays served so that each epoch is ``epoch_samples`` samples, reshuffled
    from the network's seed (:func:`epoch_order`, so --pack gives the same batches).

    A generator, not a PyDataset: Keras reads a generator strictly in sequence (a read-ahead
    takes the next batches of the same sequence), so the batches of epoch e depend only on e
    and a network resumed at epoch e sees exactly what it would have seen without a stop.
    """

    @staticmethod
    def make(x: Any, y: Any, batch_size: int, epoch_samples: int, start_epoch: int = 0,
             seed: int = 0) -> Any:
        import numpy as np

        xs, ys = np.asarray(x), np.asarray(y)
        rng = np.random.default_rng(seed)

        def order() -> Any:
            return epoch_order(rng, len(xs), epoch_samples)

        for _ in range(start_epoch):  # the same data order as without a stop
            order()

        def serve() -> Iterator[Any]:
            while True:
                idx = order()
                for i in range(0, epoch_samples, batch_size):
                    sel = idx[i:i + batch_size]
                    yield xs[sel], ys[sel]

        return serve()

    @staticmethod
    def steps(batch_size: int, epoch_samples: int) -> int:
        return math.ceil(epoch_samples / batch_size)


def peek_data(data: Any, model_key: str, what: str) -> int:
    """Take one batch of a data source to check its shape (used by generate's check)."""
    d = materialise(data)
    if is_array_pair(d):
        return _batch_len(d, model_key, what)
    if hasattr(d, "element_spec"):
        return _batch_len(next(iter(d)), model_key, what)
    if hasattr(d, "__getitem__") and hasattr(d, "__len__") and hasattr(d, "on_epoch_end"):
        return _batch_len(d[0], model_key, what)
    if isinstance(d, Iterable) or hasattr(d, "__next__"):
        try:
            return _batch_len(next(iter(d)), model_key, what)
        except StopIteration:
            raise ContractError(f"{model_key}: {what} yielded nothing: it must yield (x, y) "
                                "batches") from None
    raise ContractError(f"{model_key}: {what} of type {type(d).__name__} is not usable")
