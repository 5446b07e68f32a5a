"""Packed training against the same networks trained alone (same init, same batch order):
weights, losses, early stopping per network, fallback and the variable-count guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain.contract import validate_output
from netrain.packed import epoch_order, network_rng, train_networks_packed
from netrain.training import NetworkJob

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.logs: dict[int, list[dict[str, float]]] = {}
        self.finished: dict[int, Any] = {}
        self.failed: list[BaseException] = []

    def network_started(self, job: NetworkJob) -> None:
        self.events.append(("started", job.net_index))

    def epoch_end(self, job: NetworkJob, epoch: int, logs: dict[str, float]) -> None:
        self.events.append(("epoch", job.net_index))
        self.logs.setdefault(job.net_index, []).append(logs)

    def network_finished(self, job: NetworkJob, result: Any) -> None:
        self.events.append(("finished", job.net_index))
        self.finished[job.net_index] = result

    def network_failed(self, index: int, job: Any, exc: BaseException) -> None:
        self.failed.append(exc)


def data(n: int = 96, features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (np.sin(x[:, :1]) * 2.0 + x[:, 1:2]).astype("float32")


def mlp() -> Any:
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def make_job(tmp: Path, i: int, *, gen: Any = mlp, train: Any = None, evaluation: Any = None,
             epochs: int = 3, epoch_samples: int = 0, intelligent: bool = False,
             extra: dict | None = None) -> NetworkJob:
    out = {"name": f"n{i}", "nb_epoch": epochs, "wpath": str(tmp / "w"),
           "archpath": str(tmp / "a"), "metricspath": str(tmp / "m"), "model_generator": gen,
           "training_generator": train if train is not None else data(),
           "evaluation_generator": evaluation, "optimizer": "adam", "loss": "mse",
           "batch_size": 16, **(extra or {})}
    cfg = validate_output(out, "t.packed")
    return NetworkJob(i, "t.packed", cfg, 1000 + i, f"n_t0_n{i}", epoch_samples, intelligent)


def alone(job: NetworkJob) -> Any:
    """The reference: the network built as the sequential path builds it, trained by keras'
    own fit on the same batches (the packed order, no shuffling)."""
    import keras

    from netrain.training import _materialise

    cfg = job.config
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed if cfg.seed is not None else job.seed)
    model = cfg.model_generator()
    model.compile(optimizer=cfg.optimizer, loss=cfg.loss, metrics=list(cfg.metrics) or None)
    x, y = _materialise(cfg.training_generator)
    val = _materialise(cfg.evaluation_generator) if cfg.evaluation_generator is not None else None
    rng = network_rng(job)
    losses: list[float] = []
    for _ in range(cfg.nb_epoch):
        order = epoch_order(rng, len(x), job.epoch_samples)
        h = model.fit(x[order], y[order], batch_size=cfg.batch_size, shuffle=False, epochs=1,
                      verbose=0, validation_data=val)
        losses.append(h.history["loss"][0])
    return model, losses


def saved(job: NetworkJob) -> list[np.ndarray]:
    import keras

    keras.backend.clear_session()
    model = job.config.model_generator()
    if not model.built:
        model(np.zeros((1, *np.asarray(_x(job)).shape[1:]), "float32"))
    model.load_weights(str(job.weights_path))
    return [np.asarray(w) for w in model.get_weights()]


def _x(job: NetworkJob) -> Any:
    from netrain.training import _materialise

    return _materialise(job.config.training_generator)[0]


def test_dense_weights_match_alone(tmp_path: Path, capsys: Any) -> None:
    lrs = [0.01, 0.01, 0.003, 0.02]
    def jobs_() -> list[NetworkJob]:  # fresh optimizer objects, as the configuration gives
        return [make_job(tmp_path, i, evaluation=data(32, seed=9),
                         extra={"optimizer": _adam(lr), "metrics": ["mae"]})
                for i, lr in enumerate(lrs)]

    jobs = jobs_()
    rec = Recorder()
    results = train_networks_packed(range(4), lambda i: jobs[i], rec)
    assert "packed 4 networks" in capsys.readouterr().out
    assert not rec.failed and all(r is not None and r.epochs == 3 for r in results)
    # the observer hears each network in the sequential order
    assert rec.events[:5] == [("started", 0), ("epoch", 0), ("epoch", 0), ("epoch", 0),
                              ("finished", 0)]
    assert set(rec.logs[0][0]) == {"loss", "mae", "val_loss", "val_mae"}
    for j in jobs_():
        ref, losses = alone(j)
        got = saved(j)
        for a, b in zip(got, ref.get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rec.logs[j.net_index][-1]["loss"], losses[-1], rtol=1e-5)
    assert (tmp_path / "m" / "n_t0_n3.csv").read_text().count("\n") == 4


def _adam(lr: float) -> Any:
    import keras

    return keras.optimizers.Adam(lr)
