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


GEN_BATCH = 32
GEN_SAMPLES = 2048  # an epoch of the generator form: 64 batches


def batches(seed: int):
    """The guide's form: a seeded, endless generator function yielding batches of 32."""
    def gen():
        rng = np.random.default_rng(seed)
        while True:
            x = rng.normal(size=(GEN_BATCH, 8)).astype("float32")
            yield x, (x.sum(axis=1, keepdims=True) > 0).astype("float32")

    return gen


def configure(inputs):
    if inputs.get("architecture") == "tinygen":  # generator functions, as the guide's users
        return {
            "name": "tinygen", "nb_epoch": inputs["nb_epoch"], "wpath": inputs["wpath"],
            "archpath": inputs["archpath"], "metricspath": inputs["metricspath"],
            "model_generator": build, "training_generator": batches(inputs["seed"]),
            "evaluation_generator": batches(inputs["seed"] + 10**6), "optimizer": "adam",
            "loss": "binary_crossentropy",
        }
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


def plain_gen_loop(n: int, epochs: int) -> None:
    """The generator form in plain Keras: one fit per network on its own generators
    (validation: a quarter of the training steps, as netrain's default)."""
    import keras

    steps = GEN_SAMPLES // GEN_BATCH
    for i in range(n):
        keras.utils.set_random_seed(i)
        model = build()
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.fit(batches(i)(), steps_per_epoch=steps, epochs=epochs,
                  validation_data=batches(i + 10**6)(), validation_steps=steps // 4,
                  verbose=0)


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
