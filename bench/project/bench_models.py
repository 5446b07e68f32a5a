"""The benchmark's tiny networks: the same model and data for netrain and for plain Keras."""

import os
import time

import numpy as np

SAMPLES = 512
BATCH = 64


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 8)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    return x, y


def build():
    import keras

    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")])


def first_step_callbacks():
    """Write the wall time of the first training step to $BENCH_FIRST_STEP (once)."""
    path = os.environ.get("BENCH_FIRST_STEP")
    if not path:
        return []
    import keras

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not os.path.exists(path):
                with open(path, "w") as fh:
                    fh.write(repr(time.time()))

    return [FirstStep()]


def configure(inputs):
    x, y = data(0)
    out = {
        "name": "tiny",
        "nb_epoch": inputs["nb_epoch"],
        "wpath": inputs["wpath"],
        "archpath": inputs["archpath"],
        "metricspath": inputs["metricspath"],
        "model_generator": build,
        "training_generator": (x, y),
        "evaluation_generator": data(1),
        "optimizer": "adam",
        "loss": "binary_crossentropy",
        "batch_size": BATCH,
    }
    if os.environ.get("BENCH_FIRST_STEP"):  # only when measured: a callback is not packed
        out["callbacks"] = first_step_callbacks
    return out


def plain_loop(n: int, epochs: int, seed0: int = 0) -> None:
    """What a user would write without netrain: the same networks with model.fit."""
    import keras

    x, y = data(0)
    val = data(1)
    for i in range(n):
        keras.utils.set_random_seed(seed0 + i)
        model = build()
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.fit(x, y, batch_size=BATCH, epochs=epochs, validation_data=val, verbose=0,
                  callbacks=first_step_callbacks())
