"""A network's initial weights under its own seed, computed without building its keras model.

Building a tiny keras model costs milliseconds of Python (layers, tracking, TensorFlow
variables), which bounds packed training of thousands of networks. Under keras 3 a model's
initial values are a pure function of the seed when every variable comes from a keras
initializer: each unseeded initializer (and each unseeded ``SeedGenerator``) takes its seed
from ``make_default_seed``, one ``random.randint(1, 10**9)`` of Python's generator, when the
layer is made; the values are then stateless random ops of that seed. So the model is built
once, under a first network's seed, with its variables left uninitialised (keras'
``StatelessScope``) to see which initializer fills each variable and which draw seeded it.
Another network's values are those initializers re-run with the draws its own seed gives.

:func:`record` says when that holds, or returns None and the caller builds every network
(checked: Python's generator advanced by exactly those draws and nothing else; numpy's,
TensorFlow's op seeds and keras' global generator untouched; no variable written while
built; every initializer keras' own). :func:`same_generator` says when two networks'
``model_generator`` build the same model (the same function with equal captured values).
The packed trainer also builds a second network in full and compares (members.Builder).
"""

from __future__ import annotations

import functools
import random
import types
from dataclasses import dataclass
from typing import Any

#: ``make_default_seed``'s draw: ``random.randint(1, int(1e9))``
_DRAW = (1, int(1e9))
#: How many draws a model may make before it is taken for something else drawing
_MAX_DRAWS = 100_000


@dataclass
class _Entry:
    """How one variable's initial value is made: ``fixed`` (the same for every seed), or
    ``initializer`` re-run with draw ``draw`` as its seed, or a seed generator's state
    ``[draw, 0]`` (``initializer`` None)."""

    shape: tuple[int, ...]
    dtype: str
    fixed: Any = None
    initializer: Any = None
    draw: int = -1


@dataclass
class Recipe:
    """The initial values of one ``model_generator``'s models, for any seed."""

    draws: int  # make_default_seed draws the generator makes
    trainable: list[_Entry]  # in model.trainable_variables order
    non_trainable: list[_Entry]  # in model.non_trainable_variables order

    def values(self, keras: Any, seed: int) -> tuple[list[Any], list[Any], Any]:
        """The trainable and non-trainable initial values a network built under ``seed``
        has, and the state Python's generator is left in after building it."""
        import numpy as np

        rng = random.Random(seed)  # keras' set_random_seed: random.seed(seed)
        drawn = [rng.randint(*_DRAW) for _ in range(self.draws)]
        numpy = keras.ops.convert_to_numpy
        made: dict[tuple[Any, ...], Any] = {}

        def one(e: _Entry) -> Any:
            if e.fixed is not None:
                return e.fixed
            if e.initializer is None:
                return np.asarray([drawn[e.draw], 0], dtype=e.dtype)
            key = (id(e.initializer), e.draw, e.shape, e.dtype)
            if key not in made:  # one initializer object on two variables: equal values
                init, kept = e.initializer, e.initializer.seed
                init.seed = drawn[e.draw]
                try:
                    made[key] = np.asarray(numpy(init(e.shape, dtype=e.dtype)))
                finally:
                    init.seed = kept
            return made[key]

        return ([one(e) for e in self.trainable], [one(e) for e in self.non_trainable],
                rng.getstate())


def record(keras: Any, model_generator: Any, seed: int) -> tuple[Any, Recipe | None]:
    """Call ``model_generator`` (keras' generators just seeded with ``seed``) with its
    variables left uninitialised, then initialise them in the order they were made. Returns
    the model and its recipe, or (None, None) where the values might not be the ones an
    eager build gives or the recipe might not hold (the caller then builds the model as
    usual, after seeding again)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None, None
    import numpy as np

    before = _outside_state(keras)
    pending_key = "uninitialized_variables"
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            model = model_generator()
        made = list(global_state.get_global_attribute(pending_key) or [])
        written = bool(scope.state_mapping)
    except Exception:  # the exact build reports whatever this was
        return None, None
    finally:
        global_state.set_global_attribute(pending_key, [])
    after_draws = random.getstate()
    if written or not made or not isinstance(model, keras.Model) or not model.built \
            or _outside_state(keras) != before:
        return None, None
    plan = [(v, v._initializer, tuple(v.shape), str(v.dtype)) for v in made]
    draws = _count_draws(seed, after_draws)
    if draws is None:
        return None, None
    rng = random.Random(seed)
    drawn = [rng.randint(*_DRAW) for _ in range(draws)]
    where = {d: j for j, d in enumerate(drawn)}
    if len(where) != len(drawn):  # two equal draws: a seed would not name its draw
        return None, None
    entries = {id(var): _entry(init, shape, dtype, where) for var, init, shape, dtype in plan}
    if any(e is None for e in entries.values()):
        return None, None
    try:
        for v in made:  # in the order they were made, as an eager build initialises them
            v._deferred_initialize()
        trainable = [entries[id(v)] for v in model.trainable_variables]
        non_trainable = [entries[id(v)] for v in model.non_trainable_variables]
    except Exception:  # a variable made outside model_generator, or keras refused
        return None, None
    numpy = keras.ops.convert_to_numpy
    for var, *_ in plan:
        e = entries[id(var)]
        assert e is not None
        if e.fixed is _FIXED:
            e.fixed = np.array(numpy(var.value), copy=True)
    return model, Recipe(draws, trainable, non_trainable)  # type: ignore[arg-type]


#: An entry whose value is the same under every seed (filled in from the model built)
_FIXED = object()


def _entry(init: Any, shape: tuple[int, ...], dtype: str, where: dict[int, int]
           ) -> _Entry | None:
    """How a variable's value follows from the draws, or None where it cannot be known."""
    module = getattr(type(init), "__module__", "") or ""
    if module.startswith("keras.src.initializers."):
        seed = getattr(init, "seed", None)
        if not hasattr(init, "_init_seed"):  # Zeros, Ones, Constant, Identity...
            return _Entry(shape, dtype, fixed=_FIXED)
        if init._init_seed is not None and isinstance(seed, int):
            return _Entry(shape, dtype, fixed=_FIXED)  # the user's own seed: every network
        if isinstance(seed, int) and seed in where:
            return _Entry(shape, dtype, initializer=init, draw=where[seed])
        return None  # a SeedGenerator as seed: its stream is not replayed
    if getattr(init, "__qualname__", "") == "SeedGenerator.__init__.<locals>.seed_initializer":
        cells = dict(zip(init.__code__.co_freevars,
                         (c.cell_contents for c in init.__closure__ or ()), strict=False))
        gen, seed = cells.get("self"), cells.get("seed")
        if gen is None or not isinstance(seed, int):
            return None
        if getattr(gen, "_initial_seed", None) is not None:
            return _Entry(shape, dtype, fixed=_FIXED)
        if seed in where:
            return _Entry(shape, dtype, draw=where[seed])
    return None


def _count_draws(seed: int, state: Any) -> int | None:
    """How many make_default_seed draws from ``seed`` reach Python's generator ``state``,
    or None if no number of them does (something else drew from it)."""
    rng = random.Random(seed)
    for n in range(_MAX_DRAWS):
        if rng.getstate() == state:
            return n
        rng.randint(*_DRAW)
    return None


def _outside_state(keras: Any) -> tuple[Any, ...]:
    """The random state a recipe cannot replay: numpy's global generator, TensorFlow's op
    seeds (its stateful random ops) and keras' global seed generator."""
    import numpy as np
    from keras.src.backend.common import global_state

    state: Any = np.random.get_state()
    tf_rng: Any = None
    try:
        import sys

        context = sys.modules.get("tensorflow.python.eager.context")
        if context is not None:
            rng = getattr(context.context(), "_rng", None)
            tf_rng = rng.getstate() if rng is not None else None
    except Exception:
        tf_rng = "unknown"
    gen = global_state.get_global_attribute("global_seed_generator")
    return state[2], state[1].tobytes(), tf_rng, id(gen) if gen is not None else None


def same_generator(f: Any, g: Any, depth: int = 0) -> bool:
    """Whether two ``model_generator`` callables build the same model: the same object, or
    the same function (code and module) with equal defaults and captured values (numbers,
    strings, and tuples, lists and dicts of them; functions compared the same way)."""
    if f is g:
        return True
    if depth > 4 or type(f) is not type(g):
        return False
    if isinstance(f, functools.partial):
        return same_generator(f.func, g.func, depth + 1) and \
            _same_value(f.args, g.args, depth) and _same_value(f.keywords, g.keywords, depth)
    if isinstance(f, types.MethodType):
        return f.__self__ is g.__self__ and f.__func__ is g.__func__
    if not isinstance(f, types.FunctionType):
        return False
    if f.__code__ is not g.__code__ or f.__globals__ is not g.__globals__:
        return False
    cf = [c.cell_contents for c in f.__closure__ or ()]
    cg = [c.cell_contents for c in g.__closure__ or ()]
    return _same_value(f.__defaults__, g.__defaults__, depth) and \
        _same_value(f.__kwdefaults__, g.__kwdefaults__, depth) and _same_value(cf, cg, depth)


def _same_value(a: Any, b: Any, depth: int) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, (int, float, str, bytes, bool, complex)):
        return bool(a == b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_value(x, y, depth)
                                        for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k], depth) for k in a)
    if callable(a):
        return same_generator(a, b, depth + 1)
    return False
