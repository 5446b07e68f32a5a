"""One journal's shipping state: the exclusive lock that makes one shipper per journal, and
the state file beside the journal (the offset shipped, run ids by key, runs left open,
refused events, creates whose outcome is uncertain), updated safely from several threads."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netrain.track.journal import read_state, unshipped_bytes, write_state

MAX_RECORDED_ERRORS = 50


class Busy(Exception):
    """Another process is shipping this journal."""


class JournalLock:
    """An exclusive flock on the journal for the shipper's lifetime."""

    def __init__(self, path: Path, wait: bool, give_up: Callable[[], bool]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or give_up():
                    os.close(fd)
                    raise Busy(f"{path} is being shipped by another process") from None
                time.sleep(0.5)
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class ShipState:
    """The state file's content, read at start, written at each chunk's start and end."""

    def __init__(self, journal: Path, uri: str) -> None:
        self.journal = journal
        self.data = read_state(journal)
        if self.data.get("uri") not in (None, uri):
            # Another backend: ship everything there (runs found by tag are deduplicated).
            self.data = {"offset": 0, "runs": {}}
        self.data["uri"] = uri
        self.lock = threading.Lock()
        # A session that died mid-chunk left "inflight": the end offset of that chunk. Its
        # events may have partly reached MLflow: metrics of that range are deduplicated.
        self.inflight_end = int(self.data.pop("inflight", 0) or 0)

    # --- the journal's position ----------------------------------------------------------
    @property
    def offset(self) -> int:
        return int(self.data.get("offset", 0))

    @property
    def seq(self) -> int:
        return int(self.data.get("seq", 0))

    def advance(self, offset: int, seq: int) -> None:
        self.data["seq"] = seq
        self.data["offset"] = offset

    def save(self, inflight: int = 0) -> None:
        with self.lock:
            if inflight:
                self.data["inflight"] = inflight
            else:
                self.data.pop("inflight", None)
            self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.data["ended"] = (not self.data.get("open")
                                  and unshipped_bytes(self.journal, self.offset) == 0)
            write_state(self.journal, self.data)

    # --- runs ----------------------------------------------------------------------------
    def run_id(self, key: str) -> str | None:
        value = self.data["runs"].get(key)
        return None if value is None else str(value)

    def set_run(self, key: str, run_id: str) -> None:
        with self.lock:
            self.data["runs"][key] = run_id

    def forget_run(self, key: str) -> None:
        with self.lock:
            self.data["runs"].pop(key, None)

    def opened(self, key: str) -> None:
        with self.lock:
            self.data["open"] = sorted({*self.data.get("open", []), key})

    def ended(self, key: str) -> None:
        with self.lock:
            self.data["open"] = [k for k in self.data.get("open", []) if k != key]

    # --- refused events ------------------------------------------------------------------
    def record_error(self, entry: dict[str, Any]) -> None:
        with self.lock:
            errors = self.data.setdefault("errors", [])
            self.data["error_count"] = int(self.data.get("error_count", 0)) + 1
            if len(errors) < MAX_RECORDED_ERRORS:
                errors.append(entry)

    # --- creates whose answer was lost ---------------------------------------------------
    def mark_uncertain(self, key: str, experiment_id: str, whole: bool = False) -> None:
        """``whole``: the request was a whole run's (a second run of it holds data too)."""
        with self.lock:
            entry: list[Any] = [experiment_id, time.time()] + (["whole"] if whole else [])
            self.data.setdefault("uncertain", {})[key] = entry

    def uncertain(self) -> dict[str, list[Any]]:
        return dict(self.data.get("uncertain") or {})

    def is_uncertain(self, key: str) -> bool:
        return key in (self.data.get("uncertain") or {})

    def settle(self, key: str) -> None:
        with self.lock:
            self.data.get("uncertain", {}).pop(key, None)
            if "uncertain" in self.data and not self.data["uncertain"]:
                del self.data["uncertain"]
