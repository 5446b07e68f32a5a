"""A keras model's ``.weights.h5`` written without keras' saver, once its layout is known.

keras' ``save_weights`` walks the model's object graph in Python: about 25 ms for a tiny
model, most of what saving a small network costs once its training is packed. The file's
layout depends only on the model's structure, so it is learnt once per structure: the model
is saved by keras with every variable holding a marker value (its index + 1; then a second
set, which must agree), and the file then says which variable each of its datasets holds
and where in the file its values lie (keras writes every dataset contiguous and unfiltered,
so a dataset's values are its dtype's bytes at one offset). Writing another model of the
same structure is then a copy of that file with each dataset's bytes replaced by the
model's values: the same groups, attributes, names, shapes and dtypes as keras' own file,
which ``load_weights`` reads as it reads keras'. A structure whose file the markers cannot
place entirely (a dataset no variable explains or not stored at one offset, a variable whose
dtype cannot hold its marker) has no layout and is saved by keras, as before.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Layouts learnt in this process, by structure key; ``None``: keras saves that structure.
_LAYOUTS: dict[Any, Layout | None] = {}


@dataclass(frozen=True)
class Layout:
    """keras' file for one structure (``skeleton``: its bytes) and, for each dataset, the
    index of the variable (in :func:`variables` order) whose value it holds, the offset of
    its bytes in the file and its dtype."""

    skeleton: bytes
    datasets: tuple[tuple[int, int, str], ...]


def with_optimizer(model: Any, own: list[Any]) -> list[Any]:
    """``own`` (variables of the model), then its optimizer's, each once."""
    seen: set[int] = set()
    out = []
    opt = getattr(model, "optimizer", None)
    for v in [*own, *(opt.variables if opt is not None else [])]:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def variables(model: Any) -> list[Any]:
    """The variables a weights file can hold: the model's weights, then its optimizer's."""
    return with_optimizer(model, list(model.weights))


def structure_key(model: Any, arch_json: str | None = None) -> Any:
    """What the file's layout depends on: the model's configuration (``arch_json``, its
    ``to_json()`` where the caller has it; without the compile settings, which hold
    per-network values such as the learning rate), its optimizer's class and every
    variable's shape and dtype. ``None`` for a model without a configuration."""
    try:
        conf = json.loads(arch_json if arch_json is not None else model.to_json())
    except Exception:  # a subclassed model without get_config: no layout
        return None
    conf.pop("compile_config", None)
    opt = getattr(model, "optimizer", None)
    return (json.dumps(conf, sort_keys=True), type(opt).__name__ if opt is not None else None,
            tuple((tuple(v.shape), str(v.dtype)) for v in variables(model)))


def save_weights(model: Any, path: Path, arch_json: str | None = None) -> None:
    """``model.save_weights(path)``, through the structure's layout when it has one."""
    key = structure_key(model, arch_json)
    if key is None:
        model.save_weights(str(path))
        return
    if key not in _LAYOUTS:
        _LAYOUTS[key] = learn(model)
    layout = _LAYOUTS[key]
    if layout is None:
        model.save_weights(str(path))
        return
    write(layout, [_numpy(v) for v in variables(model)], path)


def _numpy(v: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(v)


def learn(model: Any) -> Layout | None:
    """The layout of ``model``'s weights file, learnt by saving it with marker values (its
    variables are given their values back); ``None`` where the markers cannot place it.

    Two sets of markers are used (``i + 1``, then ``n + 3 * (i + 1)`` for variable ``i`` of
    ``n``) and must give the same layout: a dataset whose value a layer derives from a
    variable (rather than storing it) cannot pass for that variable twice."""
    vs = variables(model)
    saved = [_numpy(v) for v in vs]
    n = len(vs)
    first = _place(model, vs, saved, [i + 1 for i in range(n)])
    if first is None:
        return None
    second = _place(model, vs, saved, [n + 3 * (i + 1) for i in range(n)])
    if second is None or second.datasets != first.datasets:
        return None
    return first


def _place(model: Any, vs: list[Any], saved: list[Any], marks: list[int]) -> Layout | None:
    """Save the model with variable ``i`` holding ``marks[i]`` everywhere; the datasets of
    that file, each placed on its variable and its byte offset, or None."""
    import h5py
    import numpy as np

    markers = []
    for val, mark in zip(saved, marks, strict=True):
        if val.dtype.kind not in "iuf":
            return None
        full = np.full(val.shape, mark, dtype=val.dtype)
        if full.size and int(full.flat[0]) != mark:  # the dtype cannot hold the marker
            return None
        markers.append(full)
    index = {mark: i for i, mark in enumerate(marks)}
    fd, name = tempfile.mkstemp(suffix=".weights.h5", prefix=".netrain-layout.")
    os.close(fd)
    try:
        try:
            for v, full in zip(vs, markers, strict=True):
                v.assign(full)
            model.save_weights(name)
        finally:
            for v, val in zip(vs, saved, strict=True):
                v.assign(val)
        datasets: list[tuple[int, int, str]] = []
        ok = True

        def place(path: str, obj: Any) -> None:
            nonlocal ok
            if not isinstance(obj, h5py.Dataset):
                return
            data = np.asarray(obj[()])
            offset = obj.id.get_offset()
            flat = data.reshape(-1)
            if flat.size == 0 or not np.all(flat == flat[0]):
                ok = False
                return
            i = index.get(int(flat[0]), -1) if float(flat[0]).is_integer() else -1
            if i < 0 or data.shape != saved[i].shape or data.dtype != saved[i].dtype \
                    or offset is None or obj.id.get_storage_size() != data.nbytes:
                ok = False
                return
            datasets.append((i, int(offset), obj.dtype.str))

        with h5py.File(name, "r") as f:
            f.visititems(place)
        skeleton = Path(name).read_bytes()
        if not ok:
            return None
        for i, offset, dtype in datasets:  # the markers are where the layout says
            found = np.frombuffer(skeleton, dtype=dtype, count=markers[i].size, offset=offset)
            if not np.array_equal(found, markers[i].reshape(-1)):
                return None
        return Layout(skeleton=skeleton, datasets=tuple(datasets))
    finally:
        Path(name).unlink(missing_ok=True)


def write(layout: Layout, values: list[Any], path: Path) -> None:
    """The weights file of a model whose variables hold ``values``."""
    import numpy as np

    data = bytearray(layout.skeleton)
    for i, offset, dtype in layout.datasets:
        raw = np.ascontiguousarray(values[i], dtype=dtype).tobytes()
        data[offset:offset + len(raw)] = raw
    path.write_bytes(data)
