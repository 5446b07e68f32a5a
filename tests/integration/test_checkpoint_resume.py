"""A network stopped by a signal and resumed from its checkpoint ends exactly where the same
network trained without a stop ends: same epochs, same weights, early stopping included."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain import checkpoint
from netrain.contract import build_input, call_config_function
from netrain.errors import TaskInterrupted, note_interrupt

pytestmark = pytest.mark.slow


class _Quiet:
    def network_started(self, job: Any) -> None: ...
    def epoch_end(self, job: Any, epoch: int, logs: dict[str, float]) -> None:
        self.last = epoch
    def network_finished(self, job: Any, result: Any) -> None: ...
    def network_failed(self, index: int, job: Any, exc: BaseException) -> None: ...


def _configure(stop_after: int | None, intelligent: bool):  # type: ignore[no-untyped-def]
    def fn(inputs: dict[str, Any]) -> dict[str, Any]:
        import keras

        rng = np.random.default_rng(0)
        x = rng.normal(size=(96, 6)).astype("float32")
        y = (x[:, :1] * 0.5 + 0.1).astype("float32")

        class StopAt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if stop_after is not None and epoch + 1 == stop_after:
                    note_interrupt(signal.SIGTERM)  # what the task's handler does

        return {
            "name": "net", "nb_epoch": 12, "wpath": inputs["wpath"],
            "archpath": inputs["archpath"], "metricspath": inputs["metricspath"],
            "model_generator": lambda: keras.Sequential([
                keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1)]),
            "training_generator": (x, y), "evaluation_generator": (x[:32], y[:32]),
            "optimizer": "adam", "loss": "mse", "batch_size": 16,
            # patience with a delta no epoch reaches: stops at epoch 1 + patience
            "early_stopping": {"patience": 4, "min_delta": 100.0} if intelligent else {},
            "callbacks": [StopAt()],
        }
    return fn


def _job(tmp: Path, fn: Any, intelligent: bool, resume: Any = None) -> Any:
    from netrain.training import NetworkJob

    inputs = build_input(cls="c", architecture="a", nb_epoch=12, epoch_samples=40, nnets=1,
                         intelligent=intelligent, batch_dir=tmp, batch="b", trainingrun=0,
                         net_index=0)
    cfg = call_config_function(fn, inputs, "c.a")
    return NetworkJob(net_index=0, model_key="c.a", config=cfg, seed=inputs["seed"],
                      stem="net_t0_n0", epoch_samples=40, intelligent=intelligent,
                      key="c-a/0/n0", batch_dir=tmp, policy=checkpoint.Policy(every_epochs=1),
                      resume=resume)


@pytest.mark.parametrize("intelligent", [False, True])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path: Path, intelligent: bool) -> None:
    import keras

    from netrain.training import train_one

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


def _weights(path: Path, batch: Path) -> list[Any]:
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.load_weights(str(path))
    return [np.asarray(w) for w in model.get_weights()]
