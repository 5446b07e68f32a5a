"""netrain's training path in-process, for every data form the contract allows, and the
`intelligent` stop. Real Keras; no MLflow (an observer records the events)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain.define.contract import validate_output
from netrain.train.sequential import NetworkJob, train_networks

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.finished: list[Any] = []
        self.failed: list[BaseException] = []

    def network_started(self, job: NetworkJob) -> None:
        pass

    def epoch_end(self, job: NetworkJob, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)

    def network_finished(self, job: NetworkJob, result: Any) -> None:
        self.finished.append(result)

    def network_failed(self, index: int, job: Any, exc: BaseException) -> None:
        self.failed.append(exc)


def data(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, :1] * 2.0).astype("float32")


def model() -> Any:
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])


def endless(batch: int = 32):  # the seed's style
    x, y = data()
    i = 0
    while True:
        yield x[i:i + batch], y[i:i + batch]
        i = (i + batch) % (len(x) - batch)


def pydataset() -> Any:
    import keras

    class DS(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.x, self.y = data()

        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> Any:
            return self.x[i * 32:(i + 1) * 32], self.y[i * 32:(i + 1) * 32]

    return DS()


def tfdata() -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(data()).batch(32)


def job(tmp: Path, train: Any, evaluation: Any, *, epochs: int = 3, epoch_samples: int = 128,
        intelligent: bool = False, extra: dict | None = None) -> NetworkJob:
    out = {"name": "n", "nb_epoch": epochs, "wpath": str(tmp / "w"), "archpath": str(tmp / "a"),
           "metricspath": str(tmp / "m"), "model_generator": model,
           "training_generator": train, "evaluation_generator": evaluation,
           "optimizer": "sgd", "loss": "mse", **(extra or {})}
    cfg = validate_output(out, "t.form")
    return NetworkJob(0, "t.form", cfg, 1, "n_t0_n0", epoch_samples, intelligent)


@pytest.mark.parametrize("form", ["arrays", "arrays-epoch-samples", "generator", "function",
                                  "pydataset", "tf.data"])
def test_data_forms_train_and_save(tmp_path: Path, form: str) -> None:
    train: Any = {
        "arrays": data(), "arrays-epoch-samples": data(), "generator": endless(),
        "function": lambda: endless(16), "pydataset": pydataset(), "tf.data": tfdata(),
    }[form]
    samples = 256 if form == "arrays" else 96
    rec = Recorder()
    j = job(tmp_path, train, data(64, 1), epoch_samples=samples)
    results = train_networks([0], lambda i: j, rec)
    assert not rec.failed, rec.failed
    r = results[0]
    assert r is not None and r.epochs == 3 and rec.epochs == [0, 1, 2]
    assert "val_loss" in r.history and all(math.isfinite(v) for v in r.history["loss"])
    assert (tmp_path / "w" / "n_t0_n0.weights.h5").stat().st_size > 0
    assert (tmp_path / "a" / "n_t0_n0.json").read_text().startswith("{")
    lines = (tmp_path / "m" / "n_t0_n0.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 4


def test_intelligent_threshold_stops_early(tmp_path: Path) -> None:
    rec = Recorder()
    j = job(tmp_path, data(), data(64, 1), epochs=200, epoch_samples=256, intelligent=True,
            extra={"early_stopping": {"threshold": 1e9}})  # reached after the first epoch
    r = train_networks([0], lambda i: j, rec)[0]
    assert r is not None and r.epochs == 1 and r.stopped_early


def test_intelligent_patience_stops_when_validation_stalls(tmp_path: Path) -> None:
    rec = Recorder()
    # the validation target is unrelated noise: val_loss cannot keep improving
    rng = np.random.default_rng(3)
    noise = (rng.normal(size=(64, 4)).astype("float32"),
             rng.normal(size=(64, 1)).astype("float32"))
    j = job(tmp_path, data(), noise, epochs=300, epoch_samples=256, intelligent=True,
            extra={"early_stopping": {"patience": 2}})
    r = train_networks([0], lambda i: j, rec)[0]
    assert r is not None and r.epochs < 300 and r.stopped_early


def test_wrong_shape_fails_that_network_only(tmp_path: Path) -> None:
    rec = Recorder()
    x, y = data()
    bad = job(tmp_path, (x, y[:10]), None)
    good = job(tmp_path, data(), None)
    results = train_networks([0, 1], lambda i: bad if i == 0 else good, rec)
    assert results[0] is None and results[1] is not None
    assert "rows" in str(rec.failed[0]) and "t.form" in str(rec.failed[0])
