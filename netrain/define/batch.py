"""The batch directory: its manifest (batch.yaml), atomic creation, lookup, locking, paths."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from netrain.define.spec import NAME_RE, ModelName
from netrain.errors import BatchError

MANIFEST = "batch.yaml"
SUBDIRS = ("code", "scripts", "weights", "archs", "metrics", "logs", "records")
MANIFEST_VERSION = 1


@dataclass
class Segment:
    """A run of consecutive array indices of one model trained with the same settings."""

    start: int
    count: int
    nnets: int
    nb_epoch: int
    epoch_samples: int
    intelligent: bool
    added: str = ""
    pack: bool = False  # train each task's networks packed (netrain.packed)

    @property
    def stop(self) -> int:
        return self.start + self.count


@dataclass
class Job:
    """One submission (SLURM array job or local run) of some indices of one model."""

    job_id: str
    indices: str
    executor: str
    submitted: str
    offset: int = 0


@dataclass
class ModelEntry(ModelName):
    cls: str
    architecture: str
    segments: list[Segment] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)

    @property
    def array(self) -> int:
        return max((s.stop for s in self.segments), default=0)

    @property
    def networks(self) -> int:
        return sum(s.count * s.nnets for s in self.segments)

    def segment_for(self, index: int) -> Segment:
        for s in self.segments:
            if s.start <= index < s.stop:
                return s
        raise BatchError(f"{self.key} has no array task {index} (0-{self.array - 1})")


@dataclass
class Manifest:
    id: str
    description: str
    created: str
    netrain_version: str
    gpu: bool
    main_script: str
    code: dict[str, Any]
    tracking: dict[str, Any]
    environment: dict[str, str]
    launcher: str
    slurm: dict[str, Any]
    models: list[ModelEntry] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def model(self, key: str) -> ModelEntry:
        for m in self.models:
            if m.key == key:
                return m
        known = ", ".join(m.key for m in self.models)
        raise BatchError(f"batch {self.id} has no model {key}: it has {known}")

    @property
    def networks(self) -> int:
        return sum(m.networks for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        models = []
        for m in d.pop("models"):
            models.append({"class": m.pop("cls"), **m})
        return {"netrain_manifest": MANIFEST_VERSION, **d, "models": models}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Manifest:
        if not isinstance(d, dict) or d.get("netrain_manifest") != MANIFEST_VERSION:
            raise BatchError(f"{where} is not a netrain batch manifest (version "
                             f"{MANIFEST_VERSION}): restore it from a backup or remove the batch")
        try:
            models = []
            for m in d["models"]:
                models.append(ModelEntry(
                    cls=_name(m["class"], "class"),
                    architecture=_name(m["architecture"], "architecture"),
                    segments=[_typed(Segment, s) for s in m.get("segments") or []],
                    jobs=[_typed(Job, j) for j in m.get("jobs") or []],
                ))
            return cls(
                id=_name(d["id"], "id"),
                description=str(d.get("description") or ""),
                created=str(d["created"]),
                netrain_version=str(d.get("netrain_version", "")),
                gpu=bool(d.get("gpu", False)),
                main_script=str(d["main_script"]),
                code=dict(d.get("code") or {}),
                tracking=dict(d["tracking"]),
                environment=dict(d["environment"]),
                launcher=str(d.get("launcher", "mlflow")),
                slurm=dict(d.get("slurm") or {}),
                models=models,
                notes=list(d.get("notes") or []),
                retrains=list(d.get("retrains") or []),
                checkpoint=dict(d.get("checkpoint") or {}),
                versions={str(k): str(v) for k, v in (d.get("versions") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BatchError(f"{where} is corrupt ({type(exc).__name__}: {exc}): restore it "
                             "from a backup or remove the batch") from None


_TYPES = {"int": int, "str": str, "bool": bool}


def _name(value: Any, what: str) -> str:
    """A batch id, class or architecture from a manifest: these go into scripts and file
    names, so a hand-edited manifest must not smuggle in spaces, quotes or newlines."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a name of letters, digits, '_' and '-'")
    return value


def _typed(cls: Any, d: Any) -> Any:
    """Build a dataclass from a mapping, refusing values of the wrong type."""
    if not isinstance(d, dict):
        raise TypeError(f"expected a mapping for {cls.__name__}, got {type(d).__name__}")
    obj = cls(**d)
    for f in fields(cls):
        want = _TYPES.get(str(f.type))
        value = getattr(obj, f.name)
        if want is None:
            continue
        if (want is int and (isinstance(value, bool) or not isinstance(value, int))) or \
                not isinstance(value, want):
            raise TypeError(f"{cls.__name__}.{f.name} should be {want.__name__}, got {value!r}")
    return obj


def network_files(stem: str) -> tuple[str, str, str]:
    """A network's file names, the same in every folder that holds them: weights (wpath),
    architecture (archpath) and metrics (metricspath)."""
    return f"{stem}.weights.h5", f"{stem}.json", f"{stem}.csv"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def new_batch_id() -> str:
    """``YYYYMMDD-HHMMSS-xxxx``: sorts by creation time, unique across concurrent generates."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RetrainJob:
    """A retrain's job as batch.yaml records it."""

    of: str
    model: str
    index: int
    job_id: str
    executor: str
    offset: int
    record: str  # relative to the batch directory


def retrain_jobs(batch: Batch) -> list[RetrainJob]:
    """The jobs of the batch's retrains, as batch.yaml records them."""
    out = []
    for e in batch.manifest.retrains:
        for j in e.get("jobs") or []:
            try:
                out.append(RetrainJob(str(e.get("of", "")), str(e.get("model", "")),
                                      int(e.get("trainingrun", 0)), str(j["job_id"]),
                                      str(j.get("executor", "")), int(j.get("offset", 0)),
                                      str(j.get("record", ""))))
            except (KeyError, TypeError, ValueError):
                continue  # a hand-edited entry: not a job we can ask about
    return out


class Batch:
    """A batch directory on disk."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def id(self) -> str:
        return self.manifest.id

    def script_path(self, model: ModelEntry) -> Path:
        return self.path / "scripts" / f"{model.slug}-sbatch.sh"

    @classmethod
    def load(cls, path: Path) -> Batch:
        """The batch at ``path``; when its batch.yaml is cut short or corrupted, its copy
        (.batch.yaml.bak, written with it), with a warning naming the file."""
        try:
            return cls._load(path, path / MANIFEST)
        except BatchError as exc:
            bak = backup_path(path / MANIFEST)
            if not (path / MANIFEST).is_file() or not bak.is_file():
                raise
            try:
                batch = cls._load(path, bak)
            except BatchError:
                raise exc from None
            warn_once(f"{path / MANIFEST} is unreadable: using its copy {bak.name} (the "
                      "next change to the batch rewrites it)")
            return batch

    @classmethod
    def _load(cls, path: Path, mpath: Path) -> Batch:
        import yaml

        try:
            text = mpath.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BatchError(f"{path} is not a batch: it has no {MANIFEST}") from None
        except OSError as exc:
            raise BatchError(f"cannot read {mpath}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise BatchError(f"{mpath} is not UTF-8 text: restore it from a backup or remove "
                             "the batch") from None
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError):
            raise BatchError(f"{mpath} is not valid YAML: restore it from a backup or remove "
                             "the batch") from None
        return cls(path, Manifest.from_dict(data, str(mpath)))

    def save(self) -> None:
        write_manifest(self.path, self.manifest)

    @contextlib.contextmanager
    def locked(self) -> Iterator[Batch]:
        """Hold the batch lock, reload the manifest, and yield the fresh batch."""
        with lock_file(self.path / ".lock"):
            fresh = Batch.load(self.path)
            yield fresh
            self.manifest = fresh.manifest


@contextlib.contextmanager
def lock_file(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    import yaml

    text = "# netrain batch manifest: edit with netrain add / note, not by hand\n" + yaml.safe_dump(
        manifest.to_dict(), sort_keys=False, allow_unicode=True, width=100
    )
    atomic_write(directory / MANIFEST, text, backup=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def backup_path(path: Path) -> Path:
    """The copy of a state file (batch.yaml, a task record) read when the file itself was
    cut short or corrupted: ``.<name>.bak`` beside it."""
    return path.with_name(f".{path.name}.bak")


def atomic_write(path: Path, text: str, mode: int | None = None, backup: bool = False) -> None:
    """Write ``text`` to ``path`` via a temporary sibling and a rename: never half-written.
    With ``backup``, the same text goes to backup_path(path) first. An OSError names
    ``path`` (not the temporary file) and, on a full disk, the free space."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, (0o666 if mode is None else mode) & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_error(exc, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if backup:
        atomic_write(backup_path(path), text, mode)


def write_error(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``; its text says the free space where it is short."""
    err = OSError(exc.errno, exc.strerror or str(exc), str(path))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        err.strerror = f"{exc.strerror}{free_space(path)}"
    return err


def free_space(path: Path) -> str:
    """`` (N KiB free in DIR)`` for the filesystem holding ``path`` ("" when unknown)."""
    p = Path(path).parent
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return ""
    free: float = st.f_bavail * st.f_frsize
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            break
        free /= 1024
    return f" ({free:.0f} {unit} free in {p})"


_WARNED: set[str] = set()


def warn_once(text: str) -> None:
    """One line on stderr, once per process (a state file read many times)."""
    import sys

    if text not in _WARNED:
        _WARNED.add(text)
        print(f"netrain: warning: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def staging_dir(trainings_dir: Path, batch_id: str) -> Iterator[Path]:
    """A temporary sibling of the final batch directory, removed unless renamed into place."""
    try:
        trainings_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot create trainings_dir {trainings_dir}: {exc.strerror}: "
                         "fix trainings_dir in netrain.yaml") from None
    if not os.access(trainings_dir, os.W_OK | os.X_OK):
        raise BatchError(f"trainings_dir {trainings_dir} is not writable: fix its permissions "
                         "or point trainings_dir in netrain.yaml elsewhere")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{batch_id}-", dir=trainings_dir))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a batch is shared like a dir
    try:
        for sub in SUBDIRS:
            (tmp / sub).mkdir()
        (tmp / ".lock").touch()  # made now, so that add/note never add a file to a batch
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def list_batches(trainings_dir: Path) -> list[Path]:
    """Batch directories (those holding a manifest), oldest first."""
    if not trainings_dir.is_dir():
        return []
    out = [p for p in trainings_dir.iterdir()
           if not p.name.startswith(".") and (p / MANIFEST).is_file()]
    return sorted(out, key=lambda p: p.name)


def load_batches(trainings_dir: Path | None) -> tuple[list[Batch], list[str]]:
    """Every batch of a trainings_dir, oldest first, and a line for each unreadable one."""
    batches: list[Batch] = []
    broken: list[str] = []
    for p in list_batches(trainings_dir) if trainings_dir else []:
        try:
            batches.append(Batch.load(p))
        except BatchError as exc:
            broken.append(f"{p.name}: {exc}")
    return batches, broken


def find_batch(ref: str, trainings_dir: Path | None) -> Path:
    """Resolve a batch id, a unique prefix of one, or a batch directory's path."""
    if not ref or not ref.strip():
        raise BatchError("no batch given: pass a batch id, a unique prefix, or a path")
    shown = repr(ref) if len(ref) <= 80 else repr(ref[:60]) + f"... ({len(ref)} characters)"
    try:
        p = Path(ref).expanduser()
        if (p / MANIFEST).is_file():
            return p.resolve()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, ...
        raise BatchError(f"{shown} is not a batch id or path "
                         f"({getattr(exc, 'strerror', None) or exc}): check it") from None
    if "/" in ref or ref in (".", ".."):
        raise BatchError(f"{shown} is not a batch directory (no {MANIFEST}): check the path")
    if trainings_dir is None:
        raise BatchError(f"batch {shown} not found: pass its path, or run where netrain.yaml "
                         "names the trainings_dir")
    batches = list_batches(trainings_dir)
    exact = [b for b in batches if b.name == ref]
    if exact:
        return exact[0]
    matches = [b for b in batches if b.name.startswith(ref)]
    if not matches:
        raise BatchError(f"no batch {shown} in {trainings_dir}: 'netrain show' lists the "
                         "batches")
    if len(matches) > 1:
        names = ", ".join(b.name for b in matches[:5])
        more = ", ..." if len(matches) > 5 else ""
        raise BatchError(f"batch prefix {shown} is ambiguous ({names}{more}): "
                         "give more of the id")
    return matches[0]
