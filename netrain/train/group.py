"""A packed group's training: its epochs (each network's batch order, metrics and early
stopping), the checkpoints its schedule asks for, and a signal's stop at the last completed
epoch; then each network's epochs and files, as the sequential path gives them."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from netrain.define import checkpoint
from netrain.errors import TaskInterrupted, pending_interrupt
from netrain.train.members import Member, as_array, reraise_interrupt
from netrain.train.sequential import (
    SNAPSHOT_BUDGET,
    EpochProgress,
    NetworkJob,
    NetworkResult,
    Observer,
    StopNow,
    early_stopping_callbacks,
    early_stopping_state,
    epoch_order,
    interrupt_check,
    save_checkpoint,
    save_network,
)
from netrain.train.stacked import NetworkWeights, StackedState
from netrain.train.steps import Steps

#: Draw a step's batches from the networks' sources in a thread while the previous step
#: runs. Off: it measured no faster on 2 cores (MLP 6-8-1, N=128: 2.85 s against 2.53 s
#: drawn in the step's thread; MLP 32-64-64-1: 5.84 s against 6.04 s; BENCHMARKS.md).
PREFETCH = False


def say(text: str) -> None:
    print(f"netrain: {text}", flush=True)


def network_rng(job: NetworkJob) -> Any:
    """The numpy generator that owns a network's batch order (seeded like its weights)."""
    import numpy as np

    cfg = job.config
    return np.random.default_rng(cfg.seed if cfg.seed is not None else job.seed)


class PackedGroup:
    """Trains a group of networks: its stacked state (stacked.py) advanced by its steps
    (steps.py), epoch by epoch."""

    def __init__(self, members: list[Member], keras: Any) -> None:
        import numpy as np

        self.keras, self.np = keras, np
        self.members = members
        self.k = len(members)
        self.cfg = members[0].job.config
        self.bs = self.cfg.batch_size or 32
        self.start = members[0].start
        self.state = StackedState(members, keras)
        self.steps = Steps(self.state)

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
                epoch_order(r, self.steps.n, job0.epoch_samples)
        active = np.ones(k, dtype=bool)
        stoppers = [self._stoppers(m) for m in self.members] if job0.intelligent else None
        epoch_len = self.steps.n if job0.epoch_samples <= 0 else job0.epoch_samples
        steps = math.ceil(epoch_len / bs)
        ntv = self.state.ntv
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
                    snapshot, snap_cost = self.state.snapshot(ntv)
                stop_mid_epoch = snapshot is not None or not wanted
                schedule.epoch_started()
                epoch_start = time.perf_counter()
                # copies: on jax a tensor of a numpy array may share its memory, and a step
                # still queued would see a network dropped after it (active and live change)
                active_t = tensor(active.copy())
                mv = self.state.mv_reset
                if self.steps.stream:
                    ntv, mv = self._stream_epoch(ntv, mv, active, stop_mid_epoch)
                else:
                    order = np.stack([epoch_order(r, self.steps.n, job0.epoch_samples)
                                      for r in rngs]).astype(np.int32)
                    for s in range(steps):
                        idx = tensor(order[:, s * bs:(s + 1) * bs])
                        ntv, mv = self.steps.step(ntv, mv, active_t, idx)
                        if stop_mid_epoch:
                            interrupt_check()
                logs = {key: np.asarray(v) for key, v in self.steps.results(mv).items()}
                if self.steps.has_val:
                    mv = self.state.mv_reset
                    if self.steps.vstream:
                        mv = self._stream_validation(ntv, mv, active)
                    else:
                        vbs = self.steps.vbs
                        for s in range(math.ceil(self.steps.nv / vbs)):
                            rows = np.arange(s * vbs, min(self.steps.nv, (s + 1) * vbs),
                                             dtype=np.int32)
                            mv = self.steps.evaluate(ntv, mv, active_t,
                                                tensor(np.tile(rows, (k, 1))))
                    logs.update({f"val_{key}": np.asarray(v)
                                 for key, v in self.steps.results(mv).items()})
                was_active = active.copy()
                for i, m in enumerate(self.members):
                    if not was_active[i]:
                        continue
                    for key, v in logs.items():
                        m.history.setdefault(key, []).append(float(v[i]))
                if stoppers is not None:
                    self.state.put_back(ntv, [i for i in range(k) if was_active[i]])
                    for i in range(k):
                        if not was_active[i]:
                            continue
                        net_logs = {key: float(v[i]) for key, v in logs.items()}
                        for cb in stoppers[i]:
                            cb.on_epoch_end(epoch, net_logs)
                        if stoppers[i][0].model.stop_training:
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
                ntv = self.state.restore(snapshot)
            self._stop(observer, ntv, done, active, stoppers,
                       time.perf_counter() - start, saving)
        seconds = time.perf_counter() - start
        self.state.put_back(ntv, list(range(k)))
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
                yield xy, tensor(live.copy())
                step += 1

        try:
            with ahead(draws(), PREFETCH) as batches_:
                for xy, live_t in batches_:
                    ntv, mv = self.steps.step(ntv, mv, live_t, xy)
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
            mv = self.steps.evaluate(ntv, mv, self.keras.ops.convert_to_tensor(live.copy()), xy)
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
            xs[i], ys[i] = as_array(batch[0], keras), as_array(batch[1], keras)
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
            self.state.put_back(ntv, frozen)
            for i in frozen:
                for cb in stoppers[i] if stoppers is not None else []:
                    cb.on_train_end()
                finish(self.members[i], observer, seconds / self.k, self.state.holding)
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
        self.state.put_back(ntv, which, optimizer=True)
        opt_state = self.state.optimizer_state()
        for i in which:
            m = self.members[i]
            model = m.model
            if model is None:
                model = self.state.holding(m, checkpoint=True)
                self.state.put_optimizer(model, i, opt_state)
            progress = EpochProgress(m.job)
            progress.history, progress.epochs = m.history, done
            if stoppers is not None:
                progress.early_stopping = early_stopping_state(stoppers[i][0])
                progress.best_weights = stoppers[i][0].best_weights
            save_checkpoint(model, m.job, progress)
        return time.perf_counter() - start

    def _expected_checkpoint_seconds(self) -> float:
        """What one checkpoint of the whole group costs, from one network's model file
        written (and deleted) beforehand: the automatic policy then keeps to its budget from
        the first epoch, where a group of many tiny networks would spend more time on its
        first checkpoint than on training."""
        m = self.members[0]
        assert m.job.batch_dir is not None
        model = m.model if m.model is not None else self.state.holding(m, checkpoint=True)
        self.state.optimizer_pairs(model)  # its optimizer built, as a checkpoint has it
        d = checkpoint.directory(m.job.batch_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f".probe.{os.getpid()}.keras"
        start = time.perf_counter()
        try:
            model.save(str(path))
        finally:
            path.unlink(missing_ok=True)
        return (time.perf_counter() - start) * self.k

    def _stoppers(self, m: Member) -> list[Any]:
        """The sequential path's early stopping callbacks (EarlyStopping first), bound to the
        network's own model or, without one, to its weights (:class:`NetworkWeights`)."""
        # a network without a model of its own: its weights, and the group's metrics,
        # whose direction the "auto" mode reads
        target = m.model if m.model is not None else NetworkWeights(self.state, m)
        if m.job.config.early_stopping.get("mode", "auto") == "auto" and m.model is not None:
            m.model._symbolic_build(data_batch=(m.x[:self.bs], m.y[:self.bs]))
        cbs = early_stopping_callbacks(self.keras, m.job, self.steps.has_val, m.best)
        target.stop_training = False
        for cb in cbs:  # a resumed network's state goes back after EarlyStopping's reset
            cb.set_model(target)
            cb.on_train_begin()
        return cbs


@contextlib.contextmanager
def ahead(items: Iterator[Any], thread: bool, depth: int = 2) -> Iterator[Iterator[Any]]:
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


def finish(m: Member, observer: Observer, seconds: float,
            holding: Callable[[Member], Any]) -> NetworkResult | None:
    """Replay the network's epochs to the observer (its run was opened when its group
    formed) and save it, as the sequential path, from a keras model that holds its values
    (``holding``: its own, or the group's spare)."""
    job = m.job
    try:
        for epoch in range(len(next(iter(m.history.values()), []))):
            observer.epoch_end(job, epoch, {k: v[epoch] for k, v in m.history.items()
                                            if epoch < len(v)})
        files = save_network(holding(m), job, m.history, m.arch_json)
        if job.batch_dir is not None and not job.policy.keep:
            checkpoint.remove(job.batch_dir, job.stem)
        epochs = len(next(iter(m.history.values()), []))
        result = NetworkResult(net_index=job.net_index, epochs=epochs, history=m.history,
                               seconds=seconds, stopped_early=epochs < job.config.nb_epoch,
                               files=files)
        observer.network_finished(job, result)
        return result
    except Exception as exc:
        reraise_interrupt(exc)
        observer.network_failed(m.index, job, exc)
        return None
