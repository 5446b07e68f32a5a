"""What each array task writes about itself in the batch's records/ directory.

One small JSON file per task (``records/<class>-<architecture>/<index>.json``), replaced
atomically at every change, so `show` can read the state of a batch without MLflow.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netrain import env
from netrain.define.batch import atomic_write, backup_path, now_iso, warn_once


def new_retrain_key(run_id: str) -> str:
    """A new key for one retrain task of the network whose run is ``run_id``."""
    return f"{run_id[:12]}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"


def retrain_key(retrain_of: str, environ: Mapping[str, str] | None = None) -> str:
    """The key of one retrain task (the name of its journal and its record): the one the
    process that started it chose (the executor through NETRAIN_RETRAIN_KEY, the launcher
    through the journal it opened, NETRAIN_JOURNAL; in ``environ``, default os.environ),
    else a new one."""
    e = os.environ if environ is None else environ
    if e.get(env.RETRAIN_KEY):
        return e[env.RETRAIN_KEY]
    journal = e.get(env.JOURNAL, "")
    if journal and Path(journal).parent.name == "retrain":
        return Path(journal).name.removesuffix(".jsonl")
    return new_retrain_key(retrain_of)


@dataclass
class NetRecord:
    # pending | running | finished | failed | interrupted (resumable from its checkpoint) |
    # lost (its task died with no checkpoint of it: heal's verdict)
    state: str = "pending"
    run_id: str = ""
    key: str = ""  # the network's tracking key: the same key is always the same MLflow run
    checkpoint_epoch: int = 0  # epochs saved in its checkpoint (0: none)
    name: str = ""
    stem: str = ""
    epochs: int = 0
    final: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class TaskRecord:
    model: str
    index: int
    # running | finished | failed | killed (stopped by a signal, its networks checkpointed:
    # resumable) | died (heal's verdict on a task that vanished without a word)
    state: str = "running"
    attempt: int = 1
    started: str = ""
    ended: str = ""
    host: str = ""
    pid: int = 0
    executor: str = "local"
    slurm_job_id: str = ""
    log: str = ""
    parent_run_id: str = ""
    error: str = ""
    nets: dict[str, NetRecord] = field(default_factory=dict)
    retrain_of: str = ""
    key: str = ""  # the task's tracking key
    journal: str = ""  # the task's tracking journal, relative to the batch
    extra: dict[str, Any] = field(default_factory=dict)  # keys written by a newer netrain

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskRecord:
        nets = {str(k): _net_record(v) for k, v in (d.get("nets") or {}).items()}
        fields = cls.__dataclass_fields__
        known = {k: v for k, v in d.items() if k in fields and k not in ("nets", "extra")}
        extra = {k: v for k, v in d.items() if k not in fields}
        return cls(nets=nets, extra={**(d.get("extra") or {}), **extra}, **known)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nets.values():
            out[n.state] = out.get(n.state, 0) + 1
        return out


def _net_record(d: Any) -> NetRecord:
    """A network's record; keys written by a newer netrain are ignored, not fatal."""
    if not isinstance(d, dict):
        raise TypeError("a network record is not a mapping")
    return NetRecord(**{k: v for k, v in d.items() if k in NetRecord.__dataclass_fields__})


def record_path(batch_dir: Path, slug: str, index: int, retrain_key: str = "") -> Path:
    if retrain_key:
        return batch_dir / "records" / "retrain" / f"{retrain_key}.json"
    return batch_dir / "records" / slug / f"{index}.json"


def write_record(path: Path, record: TaskRecord) -> None:
    """The record and its copy (read when the record itself is cut short)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, record.to_json(), backup=True)


def _parse(path: Path) -> TaskRecord:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return TaskRecord.from_dict(data)


def read_record(path: Path) -> TaskRecord | None:
    """The task's record; None if it has none. A record cut short or corrupted is named in
    a warning and its copy is read instead."""
    try:
        return _parse(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "cut short or corrupted"
    bak = backup_path(path)
    try:
        rec = _parse(bak)
    except (OSError, ValueError, TypeError):
        warn_once(f"task record {path} is unreadable ({why}) and has no good copy: the task "
                  "counts as not started (its journal and checkpoints are kept; a run "
                  "resumes it)")
        return None
    warn_once(f"task record {path} is unreadable ({why}): using its copy {bak.name}")
    return rec


def read_model_records(batch_dir: Path, slug: str) -> dict[int, TaskRecord]:
    """Every task record of one model, by array index (unreadable files are skipped)."""
    d = batch_dir / "records" / slug
    out: dict[int, TaskRecord] = {}
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        stem = name[:-5]
        if not stem.isdigit():
            continue
        rec = read_record(d / name)
        if rec is not None:
            out[int(stem)] = rec
    return out


def read_retrain_records(batch_dir: Path) -> list[TaskRecord]:
    d = batch_dir / "records" / "retrain"
    if not d.is_dir():
        return []
    recs = [read_record(p) for p in sorted(d.glob("*.json"))]
    return [r for r in recs if r is not None]


def new_record(model: str, index: int, previous: TaskRecord | None, log: str,
               executor: str, slurm_job_id: str, retrain_of: str = "") -> TaskRecord:
    return TaskRecord(
        model=model, index=index, state="running",
        attempt=(previous.attempt + 1) if previous else 1,
        started=now_iso(), host=socket.gethostname(), pid=os.getpid(),
        executor=executor, slurm_job_id=slurm_job_id, log=log, retrain_of=retrain_of,
    )
