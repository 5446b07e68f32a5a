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
    todo = pending(batch_dir)
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
