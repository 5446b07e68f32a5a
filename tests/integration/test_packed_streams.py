"""Packed training on the data forms of the original guide's users: generator functions,
generators, PyDatasets and tf.data Datasets. Each network draws its own batches from its own
source; packed, it ends with the weights the sequential trainer gives it."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain.define import checkpoint
from netrain.define.contract import validate_output
from netrain.errors import TaskInterrupted, note_interrupt
from netrain.train.packed import train_networks_packed
from netrain.train.sequential import NetworkJob, train_networks
from tests.integration.test_packed import Recorder, bn_dropout, custom_step, mlp

pytestmark = pytest.mark.slow


def target(x: np.ndarray) -> np.ndarray:
    return (np.sin(x[:, :1]) * 2.0 + x[:, 1:2]).astype("float32")


def batches_of(seed: int, bs: int = 16, n: int | None = None, draws: list[int] | None = None,
               on_draw: Any = None) -> Any:
    """A generator function: endless (or ``n``) seeded batches of ``bs`` rows."""
    def gen() -> Any:
        rng = np.random.default_rng(seed)
        i = 0
        while n is None or i < n:
            if on_draw is not None:
                on_draw(i)
            x = rng.normal(size=(bs, 4)).astype("float32")
            yield x, target(x)
            i += 1
            if draws is not None:
                draws.append(i)
    return gen


def global_random_batches(bs: int = 16) -> Any:
    """A generator as the guide's users write one: numpy's global generator (which keras'
    set_random_seed seeds for each network)."""
    while True:
        x = np.random.normal(size=(bs, 4)).astype("float32")
        yield x, target(x)


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")
    return x, target(x)


def pydataset(seed: int, batches: int = 6) -> Any:
    import keras

    x, y = arrays(16 * batches, seed)

    class Data(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epochs_ended = 0

        def __len__(self) -> int:
            return batches

        def __getitem__(self, i: int) -> Any:
            return x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]

        def on_epoch_end(self) -> None:
            self.epochs_ended += 1

    return Data()


def dataset(seed: int, n: int) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays(n, seed)).batch(16)


def make(tmp: Path, i: int, train: Any, evaluation: Any = None, *, epochs: int = 3,
         epoch_samples: int = 96, gen: Any = mlp, intelligent: bool = False,
         extra: dict | None = None, batch_dir: Path | None = None,
         resume: bool = False) -> NetworkJob:
    out = {"name": f"n{i}", "nb_epoch": epochs, "wpath": str(tmp / "w"),
           "archpath": str(tmp / "a"), "metricspath": str(tmp / "m"), "model_generator": gen,
           "training_generator": train, "evaluation_generator": evaluation,
           "optimizer": "adam", "loss": "mse", "metrics": ["mae"], **(extra or {})}
    cfg = validate_output(out, "t.streams")
    stem, key = f"n_t0_n{i}", f"t-streams/0/n{i}"
    kw: dict[str, Any] = {}
    if batch_dir is not None:
        kw = {"key": key, "batch_dir": batch_dir, "policy": checkpoint.Policy(every_epochs=2),
              "resume": checkpoint.read(batch_dir, stem, key) if resume else None}
    return NetworkJob(i, "t.streams", cfg, 1000 + i, stem, epoch_samples, intelligent, **kw)


def weights(job: NetworkJob) -> list[np.ndarray]:
    import keras

    keras.backend.clear_session()
    model = job.config.model_generator()
    model.load_weights(str(job.weights_path))
    return [np.asarray(w) for w in model.get_weights()]


def both(tmp: Path, jobs: Any, n: int, capsys: Any) -> tuple[list[Any], list[Any], str]:
    """Train ``jobs(dir, i)`` packed and one by one; the packed log."""
    p = [jobs(tmp / "p", i) for i in range(n)]
    packed = train_networks_packed(range(n), lambda i: p[i], Recorder())
    log = capsys.readouterr().out
    s = [jobs(tmp / "s", i) for i in range(n)]
    seq = train_networks(range(n), lambda i: s[i], Recorder())
    for a, b in zip(p, s, strict=True):
        for x, y in zip(weights(a), weights(b), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
    for r, q in zip(packed, seq, strict=True):
        assert r is not None and q is not None
        assert r.epochs == q.epochs and set(r.history) == set(q.history)
        for key in q.history:
            np.testing.assert_allclose(r.history[key], q.history[key], rtol=1e-4, atol=1e-6,
                                       err_msg=key)
    return packed, seq, log


FORMS = {
    # (training, evaluation, epoch_samples) for network i
    "generator-function": lambda i: (batches_of(i), batches_of(50 + i), 96),
    "generator": lambda i: (batches_of(i)(), batches_of(50 + i)(), 96),
    "global-random": lambda i: (global_random_batches, arrays(40, 9), 96),
    "pydataset": lambda i: (pydataset(i), pydataset(50 + i, batches=2), 0),
    "dataset-repeated": lambda i: (dataset(i, 80), dataset(50 + i, 40), 96),
    "dataset-pass": lambda i: (dataset(i, 72), dataset(50 + i, 40), 0),
}


#: rerun under KERAS_BACKEND=jax too (test_packed_jax): a generator function and a PyDataset
JAX_TOO = ("generator-function", "pydataset")


@pytest.mark.parametrize("form", [pytest.param(f, marks=pytest.mark.jax_too) if f in JAX_TOO
                                  else f for f in FORMS])
def test_sources_pack_and_match_the_sequential_trainer(tmp_path: Path, capsys: Any,
                                                       form: str) -> None:
    import keras

    lrs = [0.01, 0.003]

    def jobs(d: Path, i: int) -> NetworkJob:
        train, evaluation, samples = FORMS[form](i)
        return make(d, i, train, evaluation, epoch_samples=samples,
                    extra={"optimizer": keras.optimizers.Adam(lrs[i])})

    packed, _, log = both(tmp_path, jobs, 2, capsys)
    assert "packed 2 networks" in log and "packing off" not in log
    assert all(r is not None and r.epochs == 3 for r in packed)
    assert set(packed[0].history) == {"loss", "mae", "val_loss", "val_mae"}
    assert packed[0].history["loss"][-1] < packed[0].history["loss"][0]


@pytest.mark.jax_too
def test_bn_dropout_losses_match_the_sequential_trainer(tmp_path: Path, capsys: Any) -> None:
    _, _, log = both(
        tmp_path, lambda d, i: make(d, i, batches_of(i), batches_of(9), gen=bn_dropout), 3,
        capsys)
    assert "packed 3 networks" in log


@pytest.mark.jax_too
def test_a_generator_that_ends_ends_its_networks_training(tmp_path: Path,
                                                          capsys: Any) -> None:
    """6 batches an epoch; network 0's generator ends in its third epoch (the rest of which
    it sits out while network 3 trains on), network 1's at the end of its second, network
    2's evaluation generator (2 batches an epoch) in its second: each ends its training with
    that epoch, packed as one by one."""
    sizes = [(15, None), (12, None), (None, 3), (None, None)]

    def jobs(d: Path, i: int) -> NetworkJob:
        n, nv = sizes[i]
        return make(d, i, batches_of(i, n=n), batches_of(50 + i, n=nv), epochs=4)

    packed, _, log = both(tmp_path, jobs, 4, capsys)
    assert "packed 4 networks" in log
    assert [r.epochs for r in packed] == [3, 2, 2, 4]
    assert [r.stopped_early for r in packed] == [True, True, True, False]


def test_early_stopping_per_network(tmp_path: Path, capsys: Any) -> None:
    import keras

    es = {"monitor": "loss", "threshold": 1.0, "restore_best_weights": False}
    lrs = [0.05, 1e-5]  # the first reaches the threshold within a few epochs, the second never

    def jobs(d: Path, i: int) -> NetworkJob:
        return make(d, i, batches_of(i), epochs=8, intelligent=True,
                    extra={"optimizer": keras.optimizers.Adam(lrs[i]), "early_stopping": es})

    (fast, slow), _, log = both(tmp_path, jobs, 2, capsys)
    assert "packed 2 networks" in log
    assert fast.stopped_early and 1 <= fast.epochs < 8 and slow.epochs == 8


def test_batch_shapes_split_groups_and_unpackable_batches_fall_back(
        tmp_path: Path, capsys: Any) -> None:
    def as_dict(gen: Any) -> Any:
        def wrapped() -> Any:
            for x, y in gen():
                yield {"x": x}, y
        return wrapped

    def jobs(i: int) -> NetworkJob:
        if i < 4:  # two batch sizes (one batch an epoch for both): two groups
            return make(tmp_path, i, batches_of(i, bs=16 if i < 2 else 8), epochs=2,
                        epoch_samples=0)
        return make(tmp_path, i, as_dict(batches_of(i)), epochs=2, gen=dict_mlp)

    results = train_networks_packed(range(6), jobs, Recorder())
    log = capsys.readouterr().out
    assert "packed 2 networks (0-1)" in log and "packed 2 networks (2-3)" in log
    why = "training_generator's x batches are dicts: packing needs one array"
    assert f"netrain: packing off for network(s) 4, 5: {why}; training them one by one" in log
    assert all(r is not None and r.epochs == 2 for r in results)


def dict_mlp() -> Any:
    import keras

    inp = keras.Input((4,), name="x")
    return keras.Model({"x": inp}, keras.layers.Dense(1)(keras.layers.Dense(8)(inp)))


def test_a_peeked_generator_given_again_gets_its_first_batch_back(
        tmp_path: Path, capsys: Any) -> None:
    """A configuration that hands out the same generator object each time it is asked: its
    network, refused once built (its first batch drawn), falls back and still trains on
    every batch, from the first."""
    shared = batches_of(0, n=6)()

    def jobs(i: int) -> NetworkJob:
        train = shared if i == 0 else batches_of(1, n=6)()
        return make(tmp_path / "p", i, train, epochs=1, gen=custom_step)

    results = train_networks_packed(range(2), jobs, Recorder())
    assert "packing off for network(s) 0, 1: Custom has a custom train_step" in \
        capsys.readouterr().out
    assert all(r is not None and r.epochs == 1 for r in results)
    ref = make(tmp_path / "s", 0, batches_of(0, n=6)(), epochs=1, gen=custom_step)
    train_networks([0], lambda i: ref, Recorder())
    for x, y in zip(weights(jobs(0)), weights(ref), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


@pytest.mark.jax_too
def test_signal_mid_epoch_then_resume_gives_the_uninterrupted_weights(
        tmp_path: Path, capsys: Any) -> None:
    """A signal mid-epoch 3 (checkpoints every 2 epochs, a copy of each epoch's start
    kept): the resumed networks draw fresh generators moved past 3 epochs' batches and end
    with the weights the uninterrupted group ends with."""
    from netrain.train import group as group_mod

    a, b = tmp_path / "a", tmp_path / "b"
    steps = 6

    def job(d: Path, i: int, resume: bool = False, on_draw: Any = None) -> NetworkJob:
        return make(d, i, batches_of(i, on_draw=on_draw), batches_of(50 + i), epochs=6,
                    batch_dir=d, resume=resume, gen=bn_dropout)

    straight = [job(a, i) for i in range(3)]
    ends = train_networks_packed(range(3), lambda i: straight[i], Recorder())
    assert all(r is not None for r in ends)

    def signal_at(i: int) -> None:
        if i == 3 * steps + 3:  # epoch 3, batch 3 (read one ahead: trained up to batch 2)
            note_interrupt(signal.SIGTERM)

    old = group_mod.SNAPSHOT_BUDGET
    group_mod.SNAPSHOT_BUDGET = math.inf
    try:
        with pytest.raises(TaskInterrupted):
            train_networks_packed(range(3), lambda i: job(b, i, on_draw=signal_at if i == 0
                                                          else None), Recorder())
    finally:
        note_interrupt(None)
        group_mod.SNAPSHOT_BUDGET = old
    for i in range(3):
        meta = checkpoint.read(b, f"n_t0_n{i}", f"t-streams/0/n{i}")
        assert meta is not None and meta.epoch == 3
    capsys.readouterr()
    again = [job(b, i, resume=True) for i in range(3)]
    out = train_networks_packed(range(3), lambda i: again[i], Recorder())
    assert "packed 3 networks" in capsys.readouterr().out
    for i in range(3):
        r, ref = out[i], ends[i]
        assert r is not None and ref is not None and r.epochs == 6
        np.testing.assert_allclose(r.history["loss"], ref.history["loss"], rtol=1e-5)
        for x, y in zip(weights(again[i]), weights(straight[i]), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
