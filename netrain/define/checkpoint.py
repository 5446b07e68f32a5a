"""Per-network checkpoints in the batch: where they live, what their metadata says, when one
is due, and how they are written atomically and read back (the model file is Keras')."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Training time a checkpoint may cost in the automatic interval.
AUTO_BUDGET = 0.02
#: Beside a checkpoint's model file: early stopping's best weights (``<model file>`` + this).
BEST_SUFFIX = ".best.npz"


@dataclass(frozen=True)
class Policy:
    """When to checkpoint: ``every_epochs`` (0 = automatic: every epoch unless that costs
    more than 2 % of training time), ``every_minutes`` (0 = off), ``keep`` after success."""

    every_epochs: int = 0
    every_minutes: float = 0.0
    keep: bool = False
    enabled: bool = True

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None, base: Policy | None = None) -> Policy:
        """Read ``checkpoint:`` settings (netrain.yaml or a configuration's output)."""
        p = base or cls()
        if not d:
            return p
        if not isinstance(d, Mapping):
            raise ValueError("checkpoint must be a mapping (every_epochs, every_minutes, keep, "
                             "enabled)")
        every = d.get("every_epochs", p.every_epochs)
        if every in ("auto", None):
            every = 0
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint.every_epochs must be a whole number >= 1 or 'auto', "
                             f"got {every!r}")
        minutes = d.get("every_minutes", p.every_minutes) or 0.0
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0:
            raise ValueError(f"checkpoint.every_minutes must be a number >= 0, got {minutes!r}")
        keep = d.get("keep", p.keep)
        enabled = d.get("enabled", p.enabled)
        if not isinstance(keep, bool) or not isinstance(enabled, bool):
            raise ValueError("checkpoint.keep and checkpoint.enabled must be true or false")
        return cls(every_epochs=every, every_minutes=float(minutes), keep=keep, enabled=enabled)


class Schedule:
    """Decides at each epoch end whether a checkpoint is due. ``expected_seconds``: what a
    checkpoint is known to cost before the first one (else the first epoch's is written)."""

    def __init__(self, policy: Policy, expected_seconds: float = 0.0) -> None:
        self.policy = policy
        self.last_save = time.monotonic()
        self.epochs_since = 0
        self.epoch_seconds = 0.0
        self.save_seconds = expected_seconds
        self._epoch_start = time.monotonic()

    def epoch_started(self) -> None:
        self._epoch_start = time.monotonic()

    def due(self) -> bool:
        p = self.policy
        if not p.enabled:
            return False
        now = time.monotonic()
        self.epoch_seconds = now - self._epoch_start
        self.epochs_since += 1
        if p.every_minutes and now - self.last_save >= p.every_minutes * 60:
            return True
        if p.every_epochs:
            return self.epochs_since >= p.every_epochs
        if p.every_minutes:
            return False
        # automatic: every epoch while a save costs at most AUTO_BUDGET of the time trained
        # since the last one
        trained = self.epoch_seconds * self.epochs_since
        return self.save_seconds <= AUTO_BUDGET * trained or self.save_seconds == 0.0

    def saved(self, seconds: float) -> None:
        self.save_seconds = seconds
        self.epochs_since = 0
        self.last_save = time.monotonic()


@dataclass
class Meta:
    """What a checkpoint says besides the model: enough to resume the network exactly."""

    key: str  # the network's tracking key (the same MLflow run)
    stem: str
    epoch: int  # whole epochs trained: the model file holds the state at their end
    history: dict[str, list[float]] = field(default_factory=dict)
    early_stopping: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    partial: bool = False  # only older netrain wrote True (a mid-epoch state); now never
    #: each keras.random.SeedGenerator's state (Dropout's...), in the model's variable order
    seed_states: list[list[int]] = field(default_factory=list)
    saved: float = 0.0
    model_file: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def directory(batch_dir: Path) -> Path:
    return batch_dir / "checkpoints"


def meta_path(batch_dir: Path, stem: str) -> Path:
    return directory(batch_dir) / f"{stem}.ckpt.json"


def previous_path(batch_dir: Path, stem: str) -> Path:
    """The metadata of the checkpoint before the last one (its model file is kept too):
    what a resume falls back to when the last one was cut short or corrupted."""
    return directory(batch_dir) / f".{stem}.ckpt.prev.json"


def _read_meta(path: Path, batch_dir: Path, key: str) -> Meta | None:
    """The metadata at ``path`` if it and the model file it names are whole; raises
    ValueError naming what is damaged; None when there is none, or another network's."""
    import zipfile

    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        meta = Meta(**{k: v for k, v in d.items() if k in Meta.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        raise ValueError(f"checkpoint {path} is cut short or corrupted") from None
    if meta.key != key:
        return None
    model = directory(batch_dir) / meta.model_file
    if not meta.model_file or not model.is_file():
        return None
    # a Keras file (and numpy's .npz) is a zip archive: one cut short has lost its central
    # directory at the end
    for f in (model, model.with_name(model.name + BEST_SUFFIX)):
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            head = fh.read(2)
        if not head or (head == b"PK" and not zipfile.is_zipfile(f)):
            raise ValueError(f"checkpoint {f} is cut short or corrupted")
    return meta


def read(batch_dir: Path, stem: str, key: str) -> Meta | None:
    """The network's last whole checkpoint, or None (missing, another network's). One cut
    short or corrupted is named in a warning, and the one before it is used."""
    try:
        return _read_meta(meta_path(batch_dir, stem), batch_dir, key)
    except ValueError as exc:
        damaged = str(exc)
    try:
        meta = _read_meta(previous_path(batch_dir, stem), batch_dir, key)
    except ValueError:
        meta = None
    import sys

    then = (f"resuming from the checkpoint before it (epoch {meta.epoch})" if meta is not None
            else "no earlier checkpoint is whole: the network starts again from epoch 0")
    print(f"netrain: warning: {damaged}: {then}", file=sys.stderr, flush=True)
    return meta


def model_file(batch_dir: Path, meta: Meta) -> Path:
    return directory(batch_dir) / meta.model_file


def _meta_or_none(batch_dir: Path, path: Path, key: str) -> Meta | None:
    try:
        return _read_meta(path, batch_dir, key)
    except ValueError:
        return None


def _drop_model(batch_dir: Path, name: str) -> None:
    for n in (name, name + BEST_SUFFIX):
        with contextlib.suppress(OSError):
            os.unlink(directory(batch_dir) / n)


def commit(batch_dir: Path, meta: Meta, write_model: Any) -> float:
    """Write the model through ``write_model(path)`` then the metadata, each atomically; the
    metadata names the model file, so a kill at any moment leaves the previous checkpoint or
    the new one, never a mix. The checkpoint before stays (its metadata in previous_path)
    for a resume whose last checkpoint was damaged. Returns the seconds it took."""
    start = time.perf_counter()
    d = directory(batch_dir)
    d.mkdir(parents=True, exist_ok=True)
    generation = f"{meta.stem}.{int(time.time() * 1000)}.{os.getpid()}.keras"
    tmp = d / f".{generation}.tmp.keras"
    extra = tmp.with_name(tmp.name + BEST_SUFFIX)
    try:
        write_model(tmp)
    except BaseException:  # a full disk: no half-written file is left behind
        for f in (tmp, extra):
            with contextlib.suppress(OSError):
                os.unlink(f)
        raise
    if extra.is_file():
        os.replace(extra, d / (generation + BEST_SUFFIX))
    os.replace(tmp, d / generation)
    main, prev = meta_path(batch_dir, meta.stem), previous_path(batch_dir, meta.stem)
    old = _meta_or_none(batch_dir, main, meta.key)
    older = _meta_or_none(batch_dir, prev, meta.key)
    meta.model_file = generation
    meta.saved = time.time()
    if old is not None:
        _write_meta(prev, old)
    _write_meta(main, meta)
    if older is not None and older.model_file not in (generation, getattr(old, "model_file",
                                                                          "")):
        _drop_model(batch_dir, older.model_file)
    return time.perf_counter() - start


def _write_meta(path: Path, meta: Meta) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(meta.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def remove(batch_dir: Path, stem: str) -> None:
    """Drop a network's checkpoints (after it finished, unless kept)."""
    for meta_file in (meta_path(batch_dir, stem), previous_path(batch_dir, stem)):
        with contextlib.suppress(OSError, ValueError):
            name = json.loads(meta_file.read_text(encoding="utf-8")).get("model_file") or ""
            if name and "/" not in name:
                _drop_model(batch_dir, name)
        with contextlib.suppress(OSError):
            os.unlink(meta_file)
