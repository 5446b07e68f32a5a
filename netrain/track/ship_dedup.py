"""Which metric points MLflow may already hold, and skipping those: a run found (not created)
by this session, or events that a session which died mid-chunk may have sent."""

from __future__ import annotations

from collections.abc import Callable

from netrain.track.ship_chunk import Pending


class Seen:
    """What this session knows of runs' histories; one instance per shipper."""

    def __init__(self, read_steps: Callable[[str, str], set[int]]) -> None:
        #: (run id, metric) -> steps MLflow holds; read once per run and metric
        self._read_steps = read_steps
        self._have: dict[tuple[str, str], set[int]] = {}
        #: runs found (not created) by this session: their points are all checked
        self.found_runs: set[str] = set()
        # Keys whose run this session created at its first try, no run found under the key:
        # no session before this one created that run, so none created its children either
        # (a journal is shipped in order), and a child needs no search before its create.
        self.created_fresh: set[str] = set()

    def new_points(self, key: str, run_id: str,
                   buf: Pending) -> tuple[list[tuple[str, float, int, int]], int]:
        """(the buffered points MLflow does not hold yet, how many it held). A run this
        session created fresh holds no points yet: nothing to read back (a chunk left in
        flight by a session that failed at once would otherwise cost a history read per
        metric and run)."""
        out = []
        dropped = 0
        check = key not in self.created_fresh
        for name, value, ts, step, maybe_sent in buf.metrics:
            if check and (maybe_sent or run_id in self.found_runs):
                have = self._steps(run_id, name)
                if step in have:
                    dropped += 1
                    continue
                have.add(step)
            out.append((name, value, ts, step))
        return out, dropped

    def _steps(self, run_id: str, name: str) -> set[int]:
        cached = self._have.get((run_id, name))
        if cached is None:
            cached = self._have[(run_id, name)] = self._read_steps(run_id, name)
        return cached
