"""A network stopped by a signal and resumed from its checkpoint ends exactly where the same
network trained without a stop ends: same epochs, same weights, early stopping included,
whether the signal comes at an epoch's end or mid-epoch, and with Dropout's random state."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain.define import checkpoint
from netrain.define.contract import build_input, call_config_function
from netrain.errors import TaskInterrupted, note_interrupt

pytestmark = pytest.mark.slow


class _Quiet:
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def network_started(self, job: Any) -> None: ...
    def epoch_end(self, job: Any, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
    def network_finished(self, job: Any, result: Any) -> None: ...
    def network_failed(self, index: int, job: Any, exc: BaseException) -> None: ...


def _model(dropout: bool = False) -> Any:
    import keras

    return keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
        *([keras.layers.Dropout(0.3)] if dropout else []), keras.layers.Dense(1)])


def _configure(stop_after: int | None, intelligent: bool,  # type: ignore[no-untyped-def]
               stop_in: tuple[int, int] | None = None, dropout: bool = False):
    """``stop_after``: the signal comes as that many epochs end; ``stop_in``: (epoch, batch),
    it comes as that batch of that epoch ends (mid-epoch)."""
    def fn(inputs: dict[str, Any]) -> dict[str, Any]:
        import keras

        rng = np.random.default_rng(0)
        x = rng.normal(size=(96, 6)).astype("float32")
        y = (x[:, :1] * 0.5 + 0.1).astype("float32")

        class StopAt(keras.callbacks.Callback):
            epoch = -1

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.epoch = epoch

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if (self.epoch, batch) == stop_in:
                    note_interrupt(signal.SIGTERM)

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if stop_after is not None and epoch + 1 == stop_after:
                    note_interrupt(signal.SIGTERM)  # what the task's handler does

        return {
            "name": "net", "nb_epoch": 12, "wpath": inputs["wpath"],
            "archpath": inputs["archpath"], "metricspath": inputs["metricspath"],
            "model_generator": lambda: _model(dropout),
            "training_generator": (x, y), "evaluation_generator": (x[:32], y[:32]),
            "optimizer": "adam", "loss": "mse", "batch_size": 16,
            # patience with a delta no epoch reaches: stops at epoch 1 + patience
            "early_stopping": {"patience": 4, "min_delta": 100.0} if intelligent else {},
            "callbacks": [StopAt()],
        }
    return fn


def _job(tmp: Path, fn: Any, intelligent: bool, resume: Any = None, every: int = 1) -> Any:
    from netrain.train.sequential import NetworkJob

    inputs = build_input(cls="c", architecture="a", nb_epoch=12, epoch_samples=40, nnets=1,
                         intelligent=intelligent, batch_dir=tmp, batch="b", trainingrun=0,
                         net_index=0)
    cfg = call_config_function(fn, inputs, "c.a")
    return NetworkJob(net_index=0, model_key="c.a", config=cfg, seed=inputs["seed"],
                      stem="net_t0_n0", epoch_samples=40, intelligent=intelligent,
                      key="c-a/0/n0", batch_dir=tmp, policy=checkpoint.Policy(every_epochs=every),
                      resume=resume)


@pytest.mark.parametrize("intelligent", [False, True])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path: Path, intelligent: bool) -> None:
    import keras

    from netrain.train.sequential import train_one

    straight = train_one(_job(tmp_path / "a", _configure(None, intelligent), intelligent),
                         _Quiet(), keras)
    w_straight = _weights(straight.files["weights"], tmp_path / "a")
    keras.backend.clear_session()

    b = tmp_path / "b"
    with pytest.raises(TaskInterrupted):
        train_one(_job(b, _configure(3, intelligent), intelligent), _Quiet(), keras)
    note_interrupt(None)
    meta = checkpoint.read(b, "net_t0_n0", "c-a/0/n0")
    assert meta is not None and meta.epoch == 3
    if intelligent:
        assert meta.early_stopping["wait"] == 2  # patience used so far survives
    keras.backend.clear_session()
    resumed = train_one(_job(b, _configure(None, intelligent), intelligent, resume=meta),
                        _Quiet(), keras)
    assert resumed.epochs == straight.epochs == (5 if intelligent else 12)
    assert resumed.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-5)
    w_resumed = _weights(resumed.files["weights"], b)
    assert max(float(np.abs(x - y).max()) for x, y in zip(w_straight, w_resumed,
                                                         strict=True)) < 1e-6
    assert checkpoint.read(b, "net_t0_n0", "c-a/0/n0") is None  # removed after success


@pytest.mark.parametrize("stop_in, copy, reached, intelligent", [
    ((3, 1), True, 3, False),  # a copy of epoch 3's start: back to it
    ((3, 1), True, 3, True),  # the same, early stopping's patience carried over
    ((3, 1), False, 4, False),  # epochs too short for a copy: epoch 3 is finished first
    ((2, 1), False, 2, False),  # the checkpoint holds epoch 2's start: training just stops
])
def test_signalled_mid_epoch_resumes_exactly(tmp_path: Path, monkeypatch: Any,
                                             stop_in: tuple[int, int], copy: bool,
                                             reached: int, intelligent: bool) -> None:
    import keras

    from netrain.train import sequential as training
    from netrain.train.sequential import train_one

    straight = train_one(_job(tmp_path / "a", _configure(None, intelligent), intelligent),
                         _Quiet(), keras)
    keras.backend.clear_session()

    # checkpoints every 2 epochs; the signal comes after the 2nd of the epoch's 3 batches
    monkeypatch.setattr(training, "SNAPSHOT_BUDGET", math.inf if copy else -1.0)
    b, first = tmp_path / "b", _Quiet()
    with pytest.raises(TaskInterrupted):
        train_one(_job(b, _configure(None, intelligent, stop_in=stop_in), intelligent,
                       every=2), first, keras)
    note_interrupt(None)
    monkeypatch.undo()
    meta = checkpoint.read(b, "net_t0_n0", "c-a/0/n0")
    assert meta is not None and meta.epoch == reached and not meta.partial
    assert len(meta.history["loss"]) == reached
    assert first.epochs == list(range(reached))  # nothing told of a torn epoch
    keras.backend.clear_session()
    again = _Quiet()
    resumed = train_one(_job(b, _configure(None, intelligent), intelligent, resume=meta,
                             every=2), again, keras)
    assert again.epochs == list(range(reached, straight.epochs))
    assert resumed.epochs == straight.epochs == (5 if intelligent else 12)
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5)
    for x, y in zip(_weights(resumed.files["weights"], b),
                    _weights(straight.files["weights"], tmp_path / "a"), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stop", ["epoch end", "mid-epoch"])
def test_dropout_resumes_with_its_random_state(tmp_path: Path, monkeypatch: Any,
                                               stop: str) -> None:
    """Keras' model file does not keep a SeedGenerator's state: the checkpoint does."""
    import keras

    from netrain.train import sequential as training
    from netrain.train.sequential import train_one

    straight = train_one(_job(tmp_path / "a", _configure(None, False, dropout=True), False),
                         _Quiet(), keras)
    keras.backend.clear_session()
    b = tmp_path / "b"
    monkeypatch.setattr(training, "SNAPSHOT_BUDGET", math.inf)
    stopped = _configure(3, False, dropout=True) if stop == "epoch end" else \
        _configure(None, False, stop_in=(3, 1), dropout=True)
    with pytest.raises(TaskInterrupted):
        train_one(_job(b, stopped, False, every=2), _Quiet(), keras)
    note_interrupt(None)
    monkeypatch.undo()
    meta = checkpoint.read(b, "net_t0_n0", "c-a/0/n0")
    assert meta is not None and meta.epoch == 3
    # the Dropout layer's generator: its seed, and 3 epochs of 3 training batches drawn
    assert len(meta.seed_states) == 1 and meta.seed_states[0][1] == 9
    keras.backend.clear_session()
    resumed = train_one(_job(b, _configure(None, False, dropout=True), False, resume=meta,
                             every=2), _Quiet(), keras)
    assert resumed.epochs == straight.epochs == 12
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5)
    for x, y in zip(_weights(resumed.files["weights"], b, dropout=True),
                    _weights(straight.files["weights"], tmp_path / "a", dropout=True),
                    strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def _weights(path: Path, batch: Path, dropout: bool = False) -> list[Any]:
    model = _model(dropout)
    model.load_weights(str(path))
    return [np.asarray(w) for w in model.get_weights()]


def test_seed_states_of_nested_random_layers_go_back_into_a_fresh_model() -> None:
    import keras

    from netrain.train.sequential import seed_states, set_seed_states

    def build() -> Any:
        keras.utils.set_random_seed(5)
        inner = keras.Sequential([keras.Input((6,)), keras.layers.GaussianNoise(0.1),
                                  keras.layers.Dense(4)])
        return keras.Sequential([keras.Input((6,)), inner, keras.layers.Dropout(0.5),
                                 keras.layers.Dense(1)])

    x = np.ones((4, 6), dtype="float32")
    model = build()
    for _ in range(3):
        model(x, training=True)
    states = seed_states(model)
    assert len(states) == 2 and all(s[1] == 3 for s in states)
    fresh = build()
    assert [s[1] for s in seed_states(fresh)] == [0, 0]  # what a loaded .keras file has
    set_seed_states(fresh, states)
    assert seed_states(fresh) == states
    np.testing.assert_array_equal(model(x, training=True), fresh(x, training=True))
    with pytest.raises(ValueError, match="1 random seed generator states, the model has 2"):
        set_seed_states(fresh, states[:1])
