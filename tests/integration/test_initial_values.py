"""A network's initial weights from its model's recipe (netrain/train/initial.py) are the ones
keras builds under its seed; models the recipe cannot follow are said to be so, and the
packed trainer builds those networks in full."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from netrain.train import initial  # noqa: E402
from tests.integration.test_packed import make_job  # noqa: E402

pytestmark = pytest.mark.slow


def dense() -> Any:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def rich() -> Any:
    """Convolution, batch normalization, dropout (a seed generator), an initializer with
    the user's own seed, an embedding: the layers' random state as keras 3 draws it."""
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(12, 4)(tokens)
    x = keras.layers.Conv1D(3, 2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, kernel_initializer=keras.initializers.HeNormal(seed=7))(x)
    return keras.Model(tokens, keras.layers.Dense(1)(x))


def custom_initializer() -> Any:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        3, kernel_initializer=lambda shape, dtype=None: keras.random.normal(shape))])


def draws_numpy() -> Any:
    width = int(np.random.randint(3, 6))  # the structure depends on numpy's generator
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width)])


def built_later() -> Any:
    return keras.Sequential([keras.layers.Dense(3)])  # no input: built on data later


def eager(gen: Any, seed: int) -> Any:
    """The model as the sequential path builds it under ``seed``."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    return gen()


@pytest.mark.parametrize("gen", [dense, rich])
def test_recipe_gives_the_values_keras_builds_under_each_seed(gen: Any) -> None:
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(3)
    model, recipe = initial.record(keras, gen, 3)
    assert recipe is not None
    for a, b in zip(model.get_weights(), eager(gen, 3).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the recorded build is the eager one
    seen = set()
    for seed in (4, 1234, 3, 2**31 + 5):
        want = eager(gen, seed)
        after_build = random.getstate()
        values, nt_values, py_state = recipe.values(keras, seed)
        for got, var in zip(values + nt_values,
                            want.trainable_variables + want.non_trainable_variables,
                            strict=True):
            np.testing.assert_array_equal(got, keras.ops.convert_to_numpy(var))
        assert py_state == after_build  # Python's generator where the build leaves it
        seen.add(values[0].tobytes())
    assert len(seen) == 4  # each seed its own values


@pytest.mark.parametrize("gen", [custom_initializer, draws_numpy, built_later])
def test_models_the_recipe_cannot_follow_have_none(gen: Any) -> None:
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(3)
    assert initial.record(keras, gen, 3) == (None, None)


def _width(n: int) -> Any:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(n)])


def test_same_generator() -> None:
    def config(width: int, extra: Any = None) -> Any:
        return lambda: _width(width) if extra is None else extra

    assert initial.same_generator(dense, dense)
    assert initial.same_generator(config(4), config(4))  # a lambda per network, equal captures
    assert not initial.same_generator(config(4), config(5))
    assert not initial.same_generator(config(4, object()), config(4, object()))
    assert initial.same_generator(functools.partial(_width, 4), functools.partial(_width, 4))
    assert not initial.same_generator(functools.partial(_width, 4),
                                      functools.partial(_width, 5))
    assert not initial.same_generator(dense, rich)


_calls = [0]


def shifty() -> Any:
    """A model that changes from one call to the next (what a global counter can do, which
    no comparison of the generators sees)."""
    _calls[0] += 1
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2 + _calls[0] % 2)])


def test_packed_trainer_builds_from_the_recipe_and_checks_it(tmp_path: Path) -> None:
    """The trainer's builder: networks after the second come from the recipe, without a
    keras model, each with the values the sequential path builds it with. A model with no
    recipe, and one whose second network disagrees with the recipe, have every network
    built in full."""
    from netrain.train.members import Builder, Seeder

    for gen, replayed in ((rich, True), (custom_initializer, False), (shifty, False)):
        seeds = [11, 12, 13, 14, 5, 5]
        jobs = [make_job(tmp_path, i, gen=gen, extra={"seed": s},
                         train=_tokens() if gen is rich else None)
                for i, s in enumerate(seeds)]
        build = Builder(keras, Seeder())
        members = [build(j.net_index, j) for j in jobs]
        assert [m.model is None for m in members] == [False, False] + [replayed] * 4
        for m, s in zip(members, seeds, strict=True):
            assert not isinstance(m, str), m
            if gen is shifty:
                continue  # each call its own model: only that none came from the recipe
            want = eager(gen, s)
            for got, var in zip(m.values + m.nt_values,
                                want.trainable_variables + want.non_trainable_variables,
                                strict=True):
                np.testing.assert_array_equal(got, keras.ops.convert_to_numpy(var))


def _tokens() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 12, size=(64, 6)).astype("int32"), \
        rng.normal(size=(64, 1)).astype("float32")
