"""A network's (x, y) batches from a generator, a keras PyDataset or a tf.data.Dataset, drawn
in the one order both trainers use (sequential.py hands them to ``fit``, a packed group
stacks them).

Each source is opened once per training attempt (:func:`open_stream`) and read strictly in
sequence, so the batches a network gets depend only on its own source, never on other
networks or on who consumes them:

- a generator (or a function returning one; a generator function is such a function): one
  reader across epochs, ``steps`` batches an epoch. It is read one batch ahead, so that the
  end of the source is known when its last batch is handed out: **a generator that ends ends
  the network's training** with the epoch in which it ended (that epoch as far as its batches
  went; the network is finished, ``stopped_early`` when epochs are left). The same holds for
  an evaluation generator that ends (the network cannot be validated any more).
- a PyDataset: ``len(d)`` batches an epoch, in an order drawn per epoch from the network's
  seed (as keras shuffles a PyDataset's batches, but reproducibly, so --pack or not gives the
  same batches); its ``on_epoch_begin``/``on_epoch_end`` are called around each epoch.
- a tf.data.Dataset: ``steps`` batches an epoch from one iterator of ``d.repeat()`` when
  ``epoch_samples`` is set, else one pass of ``d`` an epoch (as keras iterates it); for
  validation, a pass an epoch, or its first ``validation_steps`` batches.
- an evaluation generator: the next ``steps`` batches each epoch (``validation_steps``, else
  a quarter of the training steps), read by netrain itself (keras would evaluate a generator
  from a fresh iterator each epoch, which replays the batches it peeked).

A resumed network (from a checkpoint after ``start_epoch`` epochs) gets a fresh source from
its configuration, moved past the batches those epochs drew: training generators and
repeated datasets skip ``start_epoch * steps`` batches, evaluation generators
``start_epoch * validation steps``, PyDatasets skip ``start_epoch`` drawn orders (their
``on_epoch_*`` hooks are not replayed). A deterministic source thus gives the resumed
network what it would have seen without the stop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

_END = object()


def is_dataset(d: Any) -> bool:
    return hasattr(d, "element_spec")


def is_pydataset(d: Any) -> bool:
    return hasattr(d, "__getitem__") and hasattr(d, "__len__") and hasattr(d, "on_epoch_end")


def is_stream(d: Any) -> bool:
    """A source of batches (not an (x, y) array pair)."""
    return is_dataset(d) or is_pydataset(d) or hasattr(d, "__iter__") or hasattr(d, "__next__")


class Reader:
    """An iterator read one item ahead: ``done`` once it has ended, i.e. when the item last
    handed out was its last; ``drawn`` counts the items handed out."""

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self.drawn = 0
        self.done = False
        self._pending: Any = _END
        self._fetch()

    def _fetch(self) -> None:
        try:
            self._pending = next(self._it)
        except StopIteration:
            self._pending, self.done = _END, True

    @property
    def first(self) -> Any:
        """The next item (the first, before any was drawn); ``_END`` when there is none."""
        return self._pending

    def next(self) -> Any:
        if self._pending is _END:
            raise StopIteration
        item = self._pending
        self.drawn += 1
        self._fetch()
        return item

    def replay(self) -> Iterator[Any]:
        """What is left, as a plain generator (the item read ahead first)."""
        if self._pending is not _END:
            yield self._pending
        yield from self._it


def generator_steps(epoch_samples: int, batch: int) -> int:
    """Batches an epoch of a generator: ``epoch_samples`` rounded up to whole batches (one
    batch when it is 0), as the sequential path has always counted them."""
    return max(1, math.ceil((epoch_samples or batch) / batch))


class Stream:
    """One network's source of batches for one role (training or evaluation)."""

    def __init__(self, kind: str, steps: int | None, first: Any) -> None:
        self.kind = kind  # "generator", "pydataset", "dataset"
        self.steps = steps  # batches an epoch; None: one pass of the source an epoch
        self.first = first  # the first batch, as the source gave it
        self.reader: Reader | None = None  # the source read ahead (generators)
        self.data: Any = None
        self.rng: Any = None
        self._repeat = False
        #: the packed trainer's per-network state of the global random generators (None: as is)
        self.random: Any = None

    def _guard(self) -> Any:
        import contextlib

        return self.random.swapped() if self.random is not None else contextlib.nullcontext()

    def begin(self) -> Iterator[Any]:
        """:meth:`epoch`, with the network's own global random state (the packed trainer's)."""
        with self._guard():
            return self.epoch()

    def draw(self, it: Iterator[Any]) -> Any:
        """The next batch of ``it`` (from :meth:`begin`); StopIteration at its end."""
        with self._guard():
            return next(it)

    def finish(self) -> None:
        """:meth:`end_epoch`, with the network's own global random state."""
        with self._guard():
            self.end_epoch()

    @property
    def ended(self) -> bool:
        """The source has ended: no batch is left for another epoch (generators only)."""
        return self.reader is not None and self.reader.done and self.kind == "generator"

    def epoch(self) -> Iterator[Any]:
        """This epoch's batches (fewer when the source ends). The caller calls
        :meth:`end_epoch` once it has drawn them."""
        if self.kind == "pydataset":
            order = self.rng.permutation(len(self.data)) if self.rng is not None \
                else range(len(self.data))
            self.data.on_epoch_begin()
            return (self.data[int(i)] for i in order)
        if self.kind == "dataset" and not self._repeat:
            # one pass an epoch, or (evaluation with validation_steps) its first ``steps``
            # batches: keras evaluates from a fresh iterator each epoch
            it = iter(self.data)
            return it if self.steps is None else itertools.islice(it, self.steps)
        assert self.reader is not None and self.steps is not None
        return self._take(self.reader, self.steps)

    @staticmethod
    def _take(reader: Reader, n: int) -> Iterator[Any]:
        for _ in range(n):
            try:
                yield reader.next()
            except StopIteration:
                return

    def end_epoch(self) -> None:
        if self.kind == "pydataset":
            self.data.on_epoch_end()

    def endless(self) -> Iterator[Any]:
        """Epoch after epoch, as one generator (for keras' fit with ``steps_per_epoch``):
        ends when the source ends."""
        while True:
            got = 0
            for batch in self.epoch():
                got += 1
                yield batch
            self.end_epoch()
            if self.ended or not got:
                return


def rows(batch: Any) -> int:
    """The batch size of an (x, y) batch: x's first dimension."""
    x = batch[0]
    if isinstance(x, dict):
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)) and x and hasattr(x[0], "shape"):
        x = x[0]
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) and shape[0] is not None:
        return int(shape[0])
    return len(x)


def open_stream(data: Any, *, training: bool, epoch_samples: int = 0,
                steps: int | None = None, seed: int = 0, start_epoch: int = 0,
                first: Any = None) -> Stream:
    """A network's stream over ``data`` (already materialised: not a data function), moved
    past ``start_epoch`` epochs. Training: the epoch's length from ``epoch_samples`` (see the
    module's text); evaluation: ``steps`` batches an epoch (a generator must be given it; a
    dataset without it is one pass an epoch; a PyDataset is one pass in order). ``first``:
    a dataset's first batch, where the caller has already taken it."""
    import numpy as np

    if is_dataset(data):
        first = first if first is not None else next(iter(data))
        if training:
            steps = max(1, math.ceil(epoch_samples / rows(first))) if epoch_samples > 0 \
                else None
        s = Stream("dataset", steps, first)
        s.data = data
        if training and steps is not None:  # repeated, one iterator across epochs
            s._repeat = True
            ds = data.repeat()
            if start_epoch:
                ds = ds.skip(start_epoch * steps)
            s.reader = Reader(iter(ds))
        return s
    if is_pydataset(data):
        s = Stream("pydataset", len(data), data[0])
        s.data = data
        if training:
            s.rng = np.random.default_rng(seed)
            for _ in range(start_epoch):
                s.rng.permutation(len(data))
        return s
    reader = Reader(iter(data))
    if reader.first is _END:
        raise ValueError("yielded nothing")
    if training:
        steps = generator_steps(epoch_samples, rows(reader.first))
    assert steps is not None, "an evaluation generator needs its steps"
    s = Stream("generator", steps, reader.first)
    s.reader = reader
    for _ in range(start_epoch * steps):
        try:
            reader.next()
        except StopIteration:
            break
    reader.drawn = 0
    return s
