"""Example model configuration function: the seed's three models on a small offline data set.

netrain calls ``model_configuration_function(inputs)`` once per network with the input dict
(class, architecture, nb_epoch, epoch_samples, nnets, intelligent, wpath, archpath,
metricspath, trainingrun, and netrain's batch, net_index, seed) and trains what it returns.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """8x8 hand-written digits (scikit-learn ships them), or a synthetic stand-in."""
    try:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.data / 16.0).astype("float32")
        y = d.target.astype("int64")
    except ImportError:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, 1800)
        centers = rng.normal(size=(10, 64))
        x = (centers[y] + 0.5 * rng.normal(size=(1800, 64))).astype("float32")
    return x, y


def split(validation: float = 0.2):
    x, y = digits()
    n = int(len(x) * (1 - validation))
    return (x[:n], y[:n]), (x[n:], y[n:])


def batches(x, y, batch_size: int, seed: int):
    """The seed's style: a generator yielding (x, y) batches forever."""
    rng = np.random.default_rng(seed)
    while True:
        idx = rng.integers(0, len(x), batch_size)
        yield x[idx], y[idx]


def clu_one(units: int):
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="clu_one")


def chransynth(filters: int):
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(filters, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="chransynth")


def classical(code: int):
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(code, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(64, activation="sigmoid"),
    ], name="classical")


def model_configuration_function(inputs: dict) -> dict:
    cls, arch = inputs["class"], inputs["architecture"]
    run, net = inputs["trainingrun"], inputs["net_index"]
    (xt, yt), (xv, yv) = split()
    out = {
        "name": f"{cls}-{arch}",
        "nb_epoch": inputs["nb_epoch"],
        "wpath": inputs["wpath"],
        "archpath": inputs["archpath"],
        "metricspath": inputs["metricspath"],
        "optimizer": "adam",
        "batch_size": 32,
        # With intelligent=true, stop when val_loss stops improving for 3 epochs.
        "early_stopping": {"patience": 3},
    }
    if cls == "classifier" and arch == "clu_one":
        units = (16, 32, 64)[run % 3]  # a hyperparameter varied over array tasks
        out.update(
            model_generator=lambda: clu_one(units),
            training_generator=(xt, yt),
            evaluation_generator=(xv, yv),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            params={"units": units},
        )
    elif cls == "classifier" and arch == "chransynth":
        filters = 4 * (1 + net % 2)  # varied over the networks of one task
        out.update(
            model_generator=lambda: chransynth(filters),
            training_generator=lambda: batches(xt, yt, 32, inputs["seed"]),
            evaluation_generator=(xv, yv),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            params={"filters": filters},
        )
    elif cls == "autoencoder" and arch == "classical":
        code = 8 + 4 * (run % 2)
        out.update(
            model_generator=lambda: classical(code),
            training_generator=(xt, xt),
            evaluation_generator=(xv, xv),
            loss="mse",
            params={"code_size": code},
        )
    else:
        raise ValueError(f"unknown model {cls}.{arch}: add it to model_configuration_function")
    return out
