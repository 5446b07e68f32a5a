"""`netrain sync`: ship every journal of a batch that has events MLflow has not got yet."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netrain.journal import pending


@dataclass
class SyncResult:
    shipped: int = 0
    busy: int = 0
    incomplete: list[str] = field(default_factory=list)


def sync_batch(batch_dir: Path, uri: str, say: Callable[[str], None],
               retry_for: float = 30.0) -> SyncResult:
    """Ship the batch's pending journals one after another; say one line per journal."""
    from netrain.shipper import Busy, ship

    result = SyncResult()
    todo = pending(batch_dir, uri)
    for i, journal in enumerate(todo):
        name = f"{batch_dir.name} {os.path.relpath(journal, batch_dir)}"

        def log(text: str, name: str = name) -> None:
            say(f"  {name}: {text}")

        try:
            report = ship(journal, batch_dir, uri, give_up_after=retry_for, log=log)
        except Busy:
            result.busy += 1
            say(f"{name}: skipped, another process is shipping it")
            continue
        result.shipped += 1
        say(f"{name}: {report.summary()}")
        if not report.complete:
            result.incomplete.append(name)
            if report.stopped:  # tracking unreachable: the next journals would wait too
                left = todo[i + 1:]
                result.incomplete += [f"{batch_dir.name} {os.path.relpath(j, batch_dir)}"
                                      for j in left]
                if left:
                    say(f"{batch_dir.name}: {len(left)} more journal(s) not tried")
                break
    return result


class Courier:
    """Ships, in a background thread, the journals handed to it: `netrain run` gives it
    each task's journal as the task ends, so that tasks too short to start MLflow for
    themselves (NETRAIN_SHIP_LATER) share this process's one MLflow client. What is not
    shipped by ``finish`` stays for `netrain sync`."""

    def __init__(self, batch_dir: Path, uri: str, retry_for: float = 30.0) -> None:
        import queue
        import threading

        self.batch_dir, self.uri, self.retry_for = batch_dir, uri, retry_for
        self.todo: queue.Queue[Path | None] = queue.Queue()
        self.left: list[Path] = []
        self.thread = threading.Thread(target=self._run, name="netrain-courier", daemon=True)
        self.thread.start()

    def give(self, journal: Path) -> None:
        self.todo.put(journal)

    def _run(self) -> None:
        import contextlib

        from netrain.shipper import Busy, ship

        # import MLflow and open the store while the first tasks train, not after them
        with contextlib.suppress(Exception):
            from netrain import mlflow_ship

            mlflow_ship.client(self.uri)
        while True:
            journal = self.todo.get()
            if journal is None:
                return
            if not journal.is_file():
                continue
            try:
                report = ship(journal, self.batch_dir, self.uri, give_up_after=self.retry_for)
                if not report.complete:
                    self.left.append(journal)
            except Busy:
                continue  # its own shipper has it
            except Exception:  # tracking must never change a task's outcome
                self.left.append(journal)

    def finish(self, timeout: float) -> list[Path]:
        """Ship what was given (for up to ``timeout`` seconds); the journals left over."""
        self.todo.put(None)
        self.thread.join(timeout)
        left = list(self.left)
        if self.thread.is_alive():
            while not self.todo.empty():
                item = self.todo.get_nowait()
                if item is not None:
                    left.append(item)
        return [j for j in dict.fromkeys(left) if j.is_file()]
