"""Packed training: a task's same-shaped networks trained together as one vectorized step.

This module forms the groups and falls back to the sequential trainer; the parts are, in the
order a group meets them: refusal.py (what cannot be packed), members.py (each network built,
or made from its model's recipe, initial.py), stacked.py (the group's stacked state),
steps.py (its compiled steps, TensorFlow's and JAX's) and group.py (its epochs).

:func:`train_networks_packed` has the contract of :func:`netrain.train.sequential.train_networks`.
Networks whose model, data shapes and settings are identical are stacked (one slice per
network) and advanced by one compiled step, ``keras.ops.vectorized_map`` over the template
model's ``stateless_call``; the gradient of the summed losses gives each network its own
gradient, and one optimizer on the stacked variables is, being elementwise, the N networks'
optimizers side by side. Each network keeps its own initial weights (those the sequential
path builds under its seed: the first two networks of a model are built in full, the others
from the model's recipe without a keras model of their own, see ``members.Builder`` and
initial.py), its own batch order (a numpy generator seeded with the network's seed, see
``sequential.epoch_order``), its own learning rate, its own per-epoch metrics and its own early
stopping (a stopped network is frozen). At the end each network's values are saved with
``save_network`` from a keras model that holds them: its own, or the group's spare one.

Checkpoints are the sequential path's (``save_checkpoint``: the keras model with its optimizer
state, its metadata, early stopping's best weights), so either trainer resumes the other's.
They are written for each network still training when the group's ``checkpoint.Schedule`` says
so, and on a signal at the last completed epoch; networks resumed at the same epoch and
optimizer step are packed together again and continue with the batch order of that epoch.

What cannot be packed (see ``refusal.pack_refusal``) falls back to the sequential trainer with
one ``netrain: packing off ...`` line; the reason is left on each job as ``job.pack_fallback``
(``None`` for a packed network, whose ``job.pack_group`` is its group's size).

Observer calls: ``network_started`` for every network of a group when the group forms (their
runs open, and are shipped, while it trains); once it has trained, each network's epochs and
``network_finished`` in order (or, on a signal, its epochs so far and ``network_interrupted``
when the observer has it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from netrain.define.spec import format_indices
from netrain.errors import TaskInterrupted, pending_interrupt
from netrain.train.group import PackedGroup, finish, say
from netrain.train.members import Builder, Member, Seeder, YoungGC, reraise_interrupt
from netrain.train.refusal import pack_refusal
from netrain.train.sequential import NetworkJob, NetworkResult, Observer, train_networks


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
            reraise_interrupt(exc)
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

    groups: dict[Any, list[Member]] = {}
    refused: dict[str, list[int]] = {}
    build, young_gc = Builder(keras, Seeder()), YoungGC()
    try:
        for index, job in jobs.items():
            try:
                built = build(index, job)
            except Exception as exc:
                reraise_interrupt(exc)
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
        with batched(observer):
            for m in members:
                _mark(m.job, None, len(members))
                observer.network_started(m.job)
        try:
            group = PackedGroup(members, keras)
            seconds = group.train(observer)
        except Exception as exc:
            reraise_interrupt(exc)
            del members[:]
            keras.backend.clear_session(free_memory=True)
            fallback(idx, f"the packed step failed ({type(exc).__name__}: {_first_line(exc)})")
            continue
        say(f"packed {len(members)} networks ({format_indices(idx, ', ')}) into one step: "
            f"{seconds:.1f} s")
        young_gc = YoungGC()
        try:
            with batched(observer):
                for m in members:
                    results[m.index] = finish(m, observer, seconds / len(members),
                                              group.state.holding)
                    young_gc()
        finally:
            young_gc.done()
        del members[:]
        # the group's memory back before the next group (its garbage collection costs
        # ~0.5 s at 128 networks: not worth it after the last)
        keras.backend.clear_session(free_memory=g + 1 < len(pending))
    return [results[i] for i in indices]


def batched(observer: Observer) -> contextlib.AbstractContextManager[Any]:
    """The observer's block for a group's events at once (its record writes coalesce), if
    it has one."""
    block = getattr(observer, "batched", None)
    return block() if block is not None else contextlib.nullcontext()


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
        reraise_interrupt(exc)
    wanted = first[indices[0]].config.pack if first else None
    if wanted is None:
        wanted = pack

    def cached(i: int) -> NetworkJob:
        job = first.pop(i, None)
        return job if job is not None else make_job(i)

    if not wanted:
        return train_networks(indices, cached, observer)
    return train_networks_packed(indices, cached, observer)
