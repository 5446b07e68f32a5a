"""Packed training against the same networks trained alone (same init, same batch order):
weights, losses, early stopping per network, fallback and the variable-count guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain.define.contract import validate_output
from netrain.train.packed import epoch_order, network_rng, pack_fallback, train_networks_packed
from netrain.train.sequential import NetworkJob

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

    from netrain.train.sequential import materialise

    cfg = job.config
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed if cfg.seed is not None else job.seed)
    model = cfg.model_generator()
    model.compile(optimizer=cfg.optimizer, loss=cfg.loss, metrics=list(cfg.metrics) or None)
    x, y = materialise(cfg.training_generator)
    val = materialise(cfg.evaluation_generator) if cfg.evaluation_generator is not None else None
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
    from netrain.train.sequential import materialise

    return materialise(job.config.training_generator)[0]


@pytest.mark.jax_too  # rerun on the jax backend by test_packed_jax
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
    # the group's runs open before it trains; then each network's epochs and end, in order
    assert rec.events[:4] == [("started", i) for i in range(4)]
    assert rec.events[4:8] == [("epoch", 0), ("epoch", 0), ("epoch", 0), ("finished", 0)]
    assert rec.events[-4:] == [("epoch", 3), ("epoch", 3), ("epoch", 3), ("finished", 3)]
    assert set(rec.logs[0][0]) == {"loss", "mae", "val_loss", "val_mae"}
    for j in jobs_():
        ref, losses = alone(j)
        got = saved(j)
        for a, b in zip(got, ref.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rec.logs[j.net_index][-1]["loss"], losses[-1], rtol=1e-5)
    assert (tmp_path / "m" / "n_t0_n3.csv").read_text().count("\n") == 4


def _adam(lr: float) -> Any:
    import keras

    return keras.optimizers.Adam(lr)


def bn_dropout() -> Any:
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
                             keras.layers.Dense(1)])


def conv() -> Any:
    import keras

    return keras.Sequential([keras.Input((12, 2)), keras.layers.Conv1D(4, 3, activation="relu"),
                             keras.layers.Conv1D(4, 3), keras.layers.Flatten(),
                             keras.layers.Dense(1)])


def seq_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 2)).astype("float32")
    return x, x[:, :, 0].mean(axis=1, keepdims=True).astype("float32")


@pytest.mark.jax_too
@pytest.mark.parametrize("kind", ["bn-dropout", "conv"])
def test_bn_dropout_and_conv_losses_match_alone(tmp_path: Path, kind: str) -> None:
    gen, mk = (bn_dropout, data) if kind == "bn-dropout" else (conv, seq_data)

    def jobs_() -> list[NetworkJob]:  # networks 0 and 1 share data; 2 has its own
        return [make_job(tmp_path, i, gen=gen, train=mk(seed=0 if i < 2 else 5),
                         evaluation=mk(32, seed=7)) for i in range(3)]

    rec = Recorder()
    results = train_networks_packed(range(3), lambda i: jobs_()[i], rec)
    assert not rec.failed and all(r is not None for r in results)
    for j in jobs_():
        _, losses = alone(j)
        got = [e["loss"] for e in rec.logs[j.net_index]]
        np.testing.assert_allclose(got, losses, rtol=1e-4)


@pytest.mark.jax_too
def test_early_stopping_per_network(tmp_path: Path) -> None:
    lrs = [0.05, 1e-5]  # the first reaches the threshold within a few epochs, the second never
    es = {"monitor": "loss", "threshold": 1.0, "restore_best_weights": False}

    def jobs_(epochs: int = 8) -> list[NetworkJob]:
        return [make_job(tmp_path, i, epochs=epochs, intelligent=True,
                         extra={"optimizer": _adam(lr), "early_stopping": es})
                for i, lr in enumerate(lrs)]

    rec = Recorder()
    fast, slow = train_networks_packed(range(2), lambda i: jobs_()[i], rec)
    assert fast is not None and slow is not None
    assert fast.stopped_early and 1 <= fast.epochs < 8 and fast.history["loss"][-1] <= 1.0
    assert slow.epochs == 8 and not slow.stopped_early
    assert len(rec.logs[0]) == fast.epochs
    # frozen at its stop: the same network trained alone for exactly those epochs
    j = jobs_(epochs=fast.epochs)[0]
    ref, _ = alone(j)
    for a, b in zip(saved(j), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def custom_step() -> Any:
    import keras

    class Custom(keras.Model):
        def train_step(self, data: Any) -> Any:
            return super().train_step(data)

    inp = keras.Input((4,))
    return Custom(inp, keras.layers.Dense(1)(inp))


def test_custom_train_step_falls_back_and_trains(tmp_path: Path, capsys: Any) -> None:
    jobs = [make_job(tmp_path, i, gen=custom_step) for i in range(2)]
    rec = Recorder()
    results = train_networks_packed(range(2), lambda i: jobs[i], rec)
    out = capsys.readouterr().out
    assert "netrain: packing off for network(s) 0, 1: Custom has a custom train_step" in out
    assert all(r is not None and r.epochs == 3 for r in results)
    assert all(pack_fallback(j) == "Custom has a custom train_step" for j in jobs)
    assert (tmp_path / "w" / "n_t0_n1.weights.h5").is_file()


def unused_weight() -> Any:
    import keras

    class Extra(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.w = self.add_weight(shape=(shape[-1], 1))
            self.unused = self.add_weight(shape=(1,))  # no gradient ever reaches it

        def call(self, x: Any) -> Any:
            return keras.ops.matmul(x, self.w)

    return keras.Sequential([keras.Input((4,)), Extra()])


def test_variable_count_guard_falls_back(tmp_path: Path, capsys: Any) -> None:
    rec = Recorder()
    results = train_networks_packed(range(2), lambda i: make_job(tmp_path, i, gen=unused_weight),
                                    rec)
    out = capsys.readouterr().out
    assert "the vectorized step updates 1 of the model's 2 trainable variables" in out
    assert "training them one by one" in out
    assert all(r is not None and r.epochs == 3 for r in results) and not rec.failed


def test_pack_refusal_names_what_cannot_be_packed(tmp_path: Path) -> None:
    from netrain.train.packed import pack_refusal

    def two(**kw: Any) -> list[NetworkJob]:
        return [make_job(tmp_path, i, **kw) for i in range(2)]

    assert pack_refusal(two()) is None
    assert pack_refusal(two()[:1]) == "only one network to train"
    gen = (b for b in [data()])
    assert pack_refusal(two(train=gen)) is None  # its batches are looked at when built
    assert "a PyDataset with workers" in str(pack_refusal(two(train=_threaded())))
    x, y = data()
    assert "sample weights" in str(pack_refusal(two(train=(x, y, np.ones(len(x))))))
    assert pack_refusal(two(extra={"callbacks": lambda: []})) is None  # a factory giving none
    assert pack_refusal(two(extra={"callbacks": []})) is None
    stop = _early_stop()
    assert "callbacks" in str(pack_refusal(two(extra={"callbacks": lambda: [stop]})))
    assert "callbacks" in str(pack_refusal(two(extra={"callbacks": [stop]})))
    assert "factory failed (ZeroDivisionError" in str(
        pack_refusal(two(extra={"callbacks": lambda: 1 / 0})))
    assert "needs one array" in str(pack_refusal(two(train=({"a": x}, y))))
    assert pack_refusal(two(), [custom_step()]) is not None  # an uncompiled model: no optimizer


def _early_stop() -> Any:
    import keras

    return keras.callbacks.EarlyStopping()


def _threaded() -> Any:
    import keras

    class Threaded(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=2)

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> Any:
            return data()

    return Threaded()


@pytest.mark.parametrize("optimizer, refused", [
    ("adam", None), ("sgd", None), ("Lamb", "not known to update each element"),
    ("clipnorm", "clipnorm=1.0 would couple"), ("global_clipnorm", "global_clipnorm=1.0"),
])
def test_optimizers_that_would_couple_the_networks_are_refused(optimizer: str,
                                                                refused: str | None) -> None:
    import keras

    from netrain.train.packed import model_refusal

    opt: Any = {"Lamb": lambda: keras.optimizers.Lamb(),
                "clipnorm": lambda: keras.optimizers.Adam(clipnorm=1.0),
                "global_clipnorm": lambda: keras.optimizers.Adam(global_clipnorm=1.0),
                }.get(optimizer, lambda: optimizer)()
    model = mlp()
    model.compile(optimizer=opt, loss="mse")
    why = model_refusal(model, keras)
    assert (why is None) if refused is None else (refused in str(why))


@pytest.mark.parametrize("flag, key, packed", [(True, None, True), (False, True, True),
                                               (True, False, False), (False, None, False)])
def test_the_configuration_pack_key_overrides_the_batch_flag(
        tmp_path: Path, capsys: Any, flag: bool, key: bool | None, packed: bool) -> None:
    from netrain.train.packed import train_networks_maybe_packed

    extra = {} if key is None else {"pack": key}
    calls: list[int] = []

    def make(i: int) -> NetworkJob:
        calls.append(i)
        return make_job(tmp_path, i, epochs=1, extra=extra)

    results = train_networks_maybe_packed([0, 1], make, Recorder(), pack=flag)
    assert all(r is not None and r.epochs == 1 for r in results)
    assert ("packed 2 networks" in capsys.readouterr().out) is packed
    assert calls == [0, 1]  # each network's configuration asked once


@pytest.mark.parametrize("epoch_samples", [0, 40])  # every sample / 40 of 96 per epoch
def test_sequential_path_gives_the_packed_results(tmp_path: Path, epoch_samples: int) -> None:
    """With or without --pack, a network ends with the same weights: the sequential trainer
    serves each network its own seeded batch order, the order the packed trainer uses."""
    from netrain.train.sequential import train_networks

    packed_jobs = [make_job(tmp_path / "p", i, epoch_samples=epoch_samples) for i in range(3)]
    train_networks_packed(range(3), lambda i: packed_jobs[i], Recorder())
    seq_jobs = [make_job(tmp_path / "s", i, epoch_samples=epoch_samples) for i in range(3)]
    results = train_networks(range(3), lambda i: seq_jobs[i], Recorder())
    assert all(r is not None for r in results)
    for p, q in zip(packed_jobs, seq_jobs, strict=True):
        for a, b in zip(saved(p), saved(q), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_generate_pack_run_end_to_end(tmp_path: Path) -> None:
    """A user's batch with --pack: one task trains its networks as one step; each is still
    its own finished MLflow run, with its files, tagged with the group it was packed in."""
    from tests.conftest import invoke, mlflow_client

    r = invoke("init", str(tmp_path / "proj"), cwd=tmp_path)
    assert r.code == 0, r.text
    proj = tmp_path / "proj"
    r = invoke("generate", "--models", "classifier.clu_one=3", "--array", "1", "--nb-epoch",
                "2", "--epoch-samples", "200", "--pack", "--run", cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[0])
    log = next((batch / "logs").glob("*.log")).read_text()
    assert "packed 3 networks" in log
    r = invoke("sync", batch.name, cwd=proj)
    assert r.code == 0, r.text
    c = mlflow_client(f"sqlite:///{proj / 'trainings' / 'mlflow.db'}")
    exp = c.get_experiment_by_name(batch.name)
    nets = [x for x in c.search_runs([exp.experiment_id]) if "net_index" in x.data.tags]
    assert len(nets) == 3 and {x.info.status for x in nets} == {"FINISHED"}
    assert {x.data.tags["netrain.packed"] for x in nets} == {"3"}
    for x in nets:
        assert sorted(m.step for m in c.get_metric_history(x.info.run_id, "loss")) == [0, 1]
        assert (batch / "weights" / f"{x.info.run_name}.weights.h5").is_file()


def stateful_random_mlp() -> Any:
    """Initial values from TensorFlow's stateful random ops (an op seed, and none): the ops
    whose cached kernels would continue a stream where a fresh build restarts it."""
    import keras
    import tensorflow as tf

    def with_op_seed(shape: Any, dtype: Any = None) -> Any:
        return tf.random.uniform(shape, seed=3)

    def without(shape: Any, dtype: Any = None) -> Any:
        return tf.random.normal(shape)

    return keras.Sequential([keras.Input((4,)),
                             keras.layers.Dense(8, kernel_initializer=with_op_seed),
                             keras.layers.Dense(4, kernel_initializer=without),
                             keras.layers.Dense(1)])


@pytest.mark.parametrize("seeds", [[11, 12, 13, 14], [5, 5, 5], [1, 2, 1, 2]])
def test_members_start_from_the_sequential_paths_initial_weights(
        tmp_path: Path, seeds: list[int]) -> None:
    """Members are built with TensorFlow's kernel cache kept where it cannot change a value;
    each still starts from the weights train_one would build it with (distinct seeds, a seed
    every network shares, seeds that come back), with the trainer's collector freezing the
    members already built after each one."""
    import keras

    from netrain.train.packed import _build_member, _Seeder, _YoungGC

    jobs = [make_job(tmp_path, i, gen=stateful_random_mlp, extra={"seed": s})
            for i, s in enumerate(seeds)]
    expected = []
    for j in jobs:  # as the sequential path: clear_session, set_random_seed, build
        keras.backend.clear_session()
        keras.utils.set_random_seed(j.config.seed)
        expected.append([np.asarray(w) for w in j.config.model_generator().get_weights()])
    seeder, young_gc = _Seeder(), _YoungGC(every=1)
    members = []
    for j in jobs:
        member = _build_member(j.net_index, j, keras, seeder)
        assert not isinstance(member, str), member
        members.append(member)
        young_gc()
    young_gc.done()
    for member, want in zip(members, expected, strict=True):
        got = [np.asarray(w) for w in member.model.get_weights()]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert len({w[0].tobytes() for w in expected}) == len(set(seeds))  # seeds matter
