"""The weights file netrain writes from a learnt layout is keras' own file, value for value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from netrain.train import h5weights  # noqa: E402


def _model(kind: str, seed: int, lr: float = 1e-3) -> Any:
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    if kind == "bn":
        layers = [keras.layers.Dense(8), keras.layers.BatchNormalization(),
                  keras.layers.Dropout(0.3), keras.layers.Dense(1)]
    elif kind == "conv":
        layers = [keras.layers.Reshape((3, 2)), keras.layers.Conv1D(4, 2),
                  keras.layers.Flatten(), keras.layers.Dense(1)]
    else:
        layers = [keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    model = keras.Sequential([keras.Input((6,)), *layers])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse", metrics=["mae"])
    return model


def _tree(path: Path) -> dict[str, Any]:
    """Every group's and dataset's attributes, and every dataset's dtype and values."""
    out: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        values = obj[()].tolist() if isinstance(obj, h5py.Dataset) else None
        out[name] = (dict(obj.attrs), str(getattr(obj, "dtype", "")), values)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        out["/"] = dict(f.attrs)
    return out


def _values(model: Any) -> list[Any]:
    return [keras.ops.convert_to_numpy(v) for v in h5weights.variables(model)]


@pytest.mark.parametrize("kind", ["mlp", "bn", "conv"])
@pytest.mark.parametrize("fitted", [False, True])
def test_layout_writes_keras_file(kind: str, fitted: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    for seed in (1, 2, 3):  # the first learns the layout, the others reuse it
        model = _model(kind, seed, lr=1e-3 * seed)  # a learning rate of its own
        if fitted:  # the optimizer's slots are in the file too
            model.fit(x, x[:, :1], epochs=1, verbose=0)
        before = _values(model)
        model.save_weights(str(tmp_path / "keras.weights.h5"))
        h5weights.save_weights(model, tmp_path / "ours.weights.h5")
        assert _tree(tmp_path / "ours.weights.h5") == _tree(tmp_path / "keras.weights.h5")
        # learning the layout gave the model its values back
        for a, b in zip(before, _values(model), strict=True):
            np.testing.assert_array_equal(a, b)
        other = _model(kind, 99)
        if fitted:
            other.fit(x, x[:, :1], epochs=1, verbose=0)
        other.load_weights(str(tmp_path / "ours.weights.h5"))
        for a, b in zip(before, _values(other), strict=True):
            np.testing.assert_array_equal(a, b)
    key = h5weights.structure_key(_model(kind, 5))
    assert h5weights._LAYOUTS.get(key) is not None


def _saved_by_keras(model: Any, tmp_path: Path) -> None:
    """The model has no layout: its file is keras' own."""
    model.compile(optimizer="adam", loss="mse")
    assert h5weights.learn(model) is None
    h5weights.save_weights(model, tmp_path / "ours.weights.h5")
    model.save_weights(str(tmp_path / "keras.weights.h5"))
    assert _tree(tmp_path / "ours.weights.h5") == _tree(tmp_path / "keras.weights.h5")


def test_a_structure_the_markers_cannot_place_is_saved_by_keras(tmp_path: Path) -> None:
    class Flagged(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.on = self.add_weight(shape=(), dtype="bool", initializer="zeros",
                                      trainable=False)

        def call(self, x: Any) -> Any:
            return x

    _saved_by_keras(keras.Sequential([keras.Input((6,)), Flagged(), keras.layers.Dense(1)]),
                    tmp_path)


def test_a_layer_that_saves_a_derived_value_is_saved_by_keras(tmp_path: Path) -> None:
    """With markers 1, 2, 3 the doubled first variable reads as the second one: only the
    second set of markers shows that the dataset is not a variable's value."""

    class Doubling(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.vs = [self.add_weight(shape=(2,), initializer="ones", name=f"v{i}")
                       for i in range(3)]

        def call(self, x: Any) -> Any:
            return x

        def save_own_variables(self, store: Any) -> None:
            store["0"] = keras.ops.convert_to_numpy(self.vs[0]) * 2
            store["1"] = keras.ops.convert_to_numpy(self.vs[1])
            store["2"] = keras.ops.convert_to_numpy(self.vs[2])

    _saved_by_keras(keras.Sequential([keras.Input((2,)), Doubling(), keras.layers.Dense(1)]),
                    tmp_path)
