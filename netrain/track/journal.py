"""The tracking journal: its file layout, the writer the task appends with, and its readers."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

JOURNAL_DIR = "journal"
STATE_SUFFIX = ".shipped.json"
IMMEDIATE = ("run", "end", "artifacts", "close")


def journal_path(batch_dir: Path, slug: str, index: int, retrain_key: str = "") -> Path:
    """journal/<slug>/<index>.jsonl, or journal/retrain/<retrain_key>.jsonl for a retrain."""
    base = Path(batch_dir) / JOURNAL_DIR
    if retrain_key:
        return base / "retrain" / f"{retrain_key}.jsonl"
    return base / slug / f"{int(index)}.jsonl"


def state_path(journal: Path) -> Path:
    return Path(str(journal) + STATE_SUFFIX)


def read_state(journal: Path) -> dict[str, Any]:
    """The shipper's state of a journal (offset 0 and no runs when it has none)."""
    try:
        data = json.loads(state_path(journal).read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("offset"), int):
            data.setdefault("runs", {})
            return data
    except (OSError, ValueError):
        pass
    return {"offset": 0, "runs": {}}


def write_state(journal: Path, state: Mapping[str, Any]) -> None:
    """Write the state file atomically (temp file + rename in the same folder)."""
    target = state_path(journal)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    data = json.dumps(state, sort_keys=True).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        if v is None:
            continue
        out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _last_seq(path: Path) -> tuple[int, bool]:
    """(highest seq of the file's complete lines, whether the file ends in a torn line)."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0, False
    if size == 0:
        return 0, False
    with open(path, "rb") as f:
        f.seek(size - 1)
        torn = f.read(1) != b"\n"
        # The last complete line is near the end: read backwards in growing windows.
        window = 65536
        while True:
            start = max(0, size - window)
            f.seek(start)
            chunk = f.read(size - start)
            lines = chunk.split(b"\n")
            if torn:
                lines = lines[:-1]
            if start > 0:
                lines = lines[1:]  # maybe cut at the window's start
            for line in reversed(lines):
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if isinstance(ev, dict) and isinstance(ev.get("seq"), int):
                        return ev["seq"], torn
            if start == 0:
                return 0, torn
            window *= 4


class JournalWriter:
    """Appends tracking events to one journal. Never raises because of tracking: a write
    error is reported once on stderr and the lines stay buffered for the next flush."""

    def __init__(self, path: Path, batch_dir: Path, flush_every: float = 2.0) -> None:
        self.path = Path(path)
        self.batch_dir = Path(batch_dir)
        self.flush_every = flush_every
        self._buf: list[bytes] = []
        self._last_flush = time.monotonic()
        self._warned = False
        self._fd: int | None = None
        self.seq, torn = _last_seq(self.path)
        self._need_newline = torn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            print(f"netrain: cannot write the tracking journal {self.path}: {exc} "
                  "(training goes on; its tracking events stay in memory)", file=sys.stderr)

    def _event(self, ev: str, fields: dict[str, Any]) -> None:
        self.seq += 1
        obj = {"seq": self.seq, "t": int(time.time() * 1000), "ev": ev, **fields}
        self._buf.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                                    allow_nan=True).encode("utf-8") + b"\n")
        if ev in IMMEDIATE or time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def open_run(self, key: str, *, parent: str | None, name: str, experiment_id: str,
                 tags: Mapping[str, Any], adopt: str | None = None) -> None:
        self._event("run", {"key": key, "parent": parent, "name": name,
                            "experiment_id": str(experiment_id),
                            "tags": {str(k): str(v) for k, v in tags.items() if v is not None},
                            "adopt": adopt or None})

    def log_params(self, key: str, params: Mapping[str, Any]) -> None:
        clean = _clean_params(params)
        if clean:
            self._event("params", {"key": key, "params": clean})

    def set_tags(self, key: str, tags: Mapping[str, Any]) -> None:
        clean = {str(k): str(v) for k, v in tags.items() if v is not None}
        if clean:
            self._event("tags", {"key": key, "tags": clean})

    def log_metrics(self, key: str, step: int, values: Mapping[str, float]) -> None:
        clean: dict[str, float] = {}
        for k, v in values.items():
            with contextlib.suppress(TypeError, ValueError):
                clean[str(k)] = float(v)
        if clean:
            self._event("metrics", {"key": key, "step": int(step), "values": clean})

    def log_artifacts(self, key: str, files: Mapping[str, Path]) -> None:
        pairs = []
        for artifact_dir, p in files.items():
            path = Path(p)
            try:
                rel = str(path.resolve().relative_to(self.batch_dir.resolve()))
            except ValueError:
                rel = str(path.resolve())
            pairs.append([str(artifact_dir), rel])
        if pairs:
            self._event("artifacts", {"key": key, "files": pairs})

    def end_run(self, key: str, status: str) -> None:
        self._event("end", {"key": key, "status": status})

    def flush(self) -> None:
        """Write the buffered lines in one append and fsync them."""
        self._last_flush = time.monotonic()
        if not self._buf:
            return
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            data = b"".join(self._buf)
            if self._need_newline:
                data = b"\n" + data  # ends a torn line left by a killed writer
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._need_newline = bool(view)  # a partial write leaves a torn line
            self._need_newline = False
            self._buf.clear()
            os.fsync(self._fd)
        except OSError as exc:
            self._warn(exc)
            if self._buf:  # whatever reached the file may end mid-line
                self._need_newline = True

    def close(self) -> None:
        self._event("close", {})
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadStats:
    """What read_events skipped: complete lines that are not JSON events."""

    def __init__(self) -> None:
        self.bad_lines = 0


def read_events(path: Path, offset: int = 0, stats: ReadStats | None = None,
                limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (offset after the line, event) from ``offset``; stop before an unterminated
    last line; skip (count in ``stats``) complete lines that are not JSON objects. With
    ``limit``, stop after that many events."""
    count = 0
    if not Path(path).exists():
        return
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        for line in f:
            if not line.endswith(b"\n"):
                return
            pos += len(line)
            text = line.strip()
            if not text:
                continue
            try:
                ev = json.loads(text)
            except ValueError:
                ev = None
            if not isinstance(ev, dict) or not isinstance(ev.get("ev"), str):
                if stats is not None:
                    stats.bad_lines += 1
                continue
            yield pos, ev
            count += 1
            if limit is not None and count >= limit:
                return


def logged_steps(path: Path) -> dict[str, int]:
    """key -> the highest metrics step in the journal (what a resumed task continues after)."""
    out: dict[str, int] = {}
    for _, ev in read_events(path):
        if ev["ev"] == "metrics" and "key" in ev:
            step = int(ev.get("step", -1))
            if step > out.get(ev["key"], -1):
                out[ev["key"]] = step
    return out


def run_status(path: Path) -> dict[str, str]:
    """key -> its last status: RUNNING after a run event, else the status of its end event."""
    out: dict[str, str] = {}
    for _, ev in read_events(path):
        if ev["ev"] == "run":
            out[ev["key"]] = "RUNNING"
        elif ev["ev"] == "end":
            out[ev["key"]] = str(ev.get("status", "FINISHED"))
    return out


def journals(batch_dir: Path) -> list[Path]:
    """Every journal of a batch, in a stable order."""
    base = Path(batch_dir) / JOURNAL_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.jsonl") if p.is_file())


def unshipped_bytes(journal: Path, offset: int | None = None) -> int:
    """Bytes of complete lines past ``offset`` (default: the state's), a torn last line not
    counted: the one measure of what is left to ship."""
    if offset is None:
        offset = int(read_state(journal).get("offset", 0))
    try:
        size = journal.stat().st_size
    except OSError:
        return 0
    if size <= offset:
        return 0
    with open(journal, "rb") as f:
        f.seek(offset)
        rest = f.read()
    end = rest.rfind(b"\n")
    return end + 1 if end >= 0 else 0


def pending(batch_dir: Path, uri: str | None = None) -> list[Path]:
    """Journals of the batch with complete lines not yet shipped (or a run creation whose
    outcome the shipper still has to check: "uncertain" in the state file); with ``uri``,
    also those shipped to another store (a batch moved to another project's)."""
    out = []
    for p in journals(batch_dir):
        state = read_state(p)
        if unshipped_bytes(p) > 0 or state.get("uncertain") or (
                uri and state.get("uri") not in (None, uri) and p.stat().st_size > 0):
            out.append(p)
    return out
