"""A chunk of journal events as lanes of MLflow calls, one lane a run, and running the lanes
several at a time: a run's calls keep their journal order, a network's run is created after
its parent's, and a run is ended after the calls of its children that came before."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: events sent together in one log_batch of their run
BUFFERED = ("metrics", "params", "tags")
#: events that are a call of their own
CALLS = ("run", "artifacts", "end")
#: finished runs of one parent sent in one request to a `netrain server`, at most
WHOLE_GROUP = 20


@dataclass
class Pending:
    """One run's buffered metrics, params and tags (sent together in log_batch calls).
    A metric point's last field says whether it may already be in MLflow (its event lies
    in the range a session that died was shipping)."""

    metrics: list[tuple[str, float, int, int, bool]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)

    def add(self, ev: dict[str, Any], maybe_sent: bool) -> None:
        seq = ev.get("seq")
        if isinstance(seq, int):
            self.seqs.append(seq)
        kind = ev["ev"]
        if kind == "metrics":
            step = int(ev.get("step", 0))
            ts = int(ev.get("t", time.time() * 1000))
            for name, value in (ev.get("values") or {}).items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                self.metrics.append((str(name), number, ts, step, maybe_sent))
        elif kind == "params":
            self.params.update({str(k): str(v) for k, v in (ev.get("params") or {}).items()})
        else:
            self.tags.update({str(k): str(v) for k, v in (ev.get("tags") or {}).items()})


@dataclass(eq=False)
class Op:
    """One call (or one log_batch's worth of buffered events) of one run."""

    key: str
    kind: str  # "run", "send", "artifacts" or "end"
    ev: dict[str, Any] = field(default_factory=dict)
    buf: Pending | None = None
    #: tags of later events of the same run, set together with the run's own ("run" ops)
    late_tags: dict[str, str] = field(default_factory=dict)
    after: list[Op] = field(default_factory=list)
    done: bool = False
    #: a "run" op whose event a session that died may have shipped
    maybe_sent: bool = False
    #: a "whole" op's ops: a run's whole life in this chunk (run, send, artifacts, end);
    #: a "wholes" op's: whole ops of one parent, sent in one request
    parts: list[Op] = field(default_factory=list)

    def finish(self) -> None:
        self.done = True
        for part in self.parts:
            part.finish()


@dataclass
class Chunk:
    lanes: dict[str, list[Op]] = field(default_factory=dict)
    order: list[Op] = field(default_factory=list)  # every op, in journal order
    last_seq: int = 0
    events: int = 0
    closed_at: int = -1  # offset of the last "close" event, -1 when none


def plan(events: Iterable[tuple[int, dict[str, Any]]], last_seq: int,
         inflight_end: int) -> Chunk:
    """The chunk's ops, lane by lane. Lines written twice (seq not above the last one
    shipped) are dropped; a run's tags events join its "run" op in this chunk, when there
    is one (one call less a run: create_run takes tags)."""
    c = Chunk(last_seq=last_seq)
    buffers: dict[str, Op] = {}
    last_run: dict[str, Op] = {}
    parent_of: dict[str, str] = {}
    for off, ev in events:
        seq = ev.get("seq")
        if isinstance(seq, int):
            if seq <= c.last_seq:
                continue  # a line written twice (a writer retried after a write error)
            c.last_seq = seq
        c.events += 1
        kind = ev.get("ev")
        key = ev.get("key")
        if kind == "close":
            c.closed_at = off  # the writer said it is done (its session ends here)
            continue
        if not isinstance(key, str):
            continue
        lane = c.lanes.setdefault(key, [])
        if kind in BUFFERED:
            run_op = last_run.get(key)
            if kind == "tags" and run_op is not None:
                run_op.late_tags.update({str(k): str(v)
                                         for k, v in (ev.get("tags") or {}).items()})
                continue
            op = buffers.get(key)
            if op is None:
                op = buffers[key] = Op(key, "send", buf=Pending())
                _append(c, lane, op)
            assert op.buf is not None
            op.buf.add(ev, maybe_sent=off <= inflight_end)
            continue
        buffers.pop(key, None)
        if kind not in CALLS:
            continue
        op = Op(key, str(kind), ev=ev)
        if kind == "run":
            op.maybe_sent = off <= inflight_end
            parent = ev.get("parent")
            if parent is not None:
                parent_of[key] = str(parent)
                if str(parent) in last_run:
                    op.after.append(last_run[str(parent)])
            last_run[key] = op
        elif kind == "end":
            # a run ends after what its children shipped before its end
            op.after += [c.lanes[k][-1] for k, p in parent_of.items()
                         if p == key and c.lanes.get(k)]
        _append(c, lane, op)
    _merge_whole_runs(c, set(parent_of.values()))
    return c


def _merge_whole_runs(c: Chunk, parents: set[str]) -> None:
    """A run whose whole life lies in the chunk (run, at most one send, its files, end) and
    that has no children in it becomes one "whole" op, in the place of its end: a
    `netrain server` takes it in one request (ship_calls.RunCalls.whole)."""
    in_place_of: dict[int, Op] = {}  # id of a run's end op -> the run's whole op
    dropped: set[int] = set()  # ids of the other ops merged
    for key, lane in c.lanes.items():
        kinds = [op.kind for op in lane]
        if (key in parents or len(lane) < 2 or kinds[0] != "run" or kinds[-1] != "end"
                or kinds.count("send") > 1
                or any(k not in ("send", "artifacts") for k in kinds[1:-1])):
            continue
        whole = Op(key, "whole", ev=lane[-1].ev, parts=list(lane),
                   after=[a for op in lane for a in op.after if a not in lane])
        c.lanes[key] = [whole]
        in_place_of[id(lane[-1])] = whole
        dropped.update(id(op) for op in lane[:-1])
    if in_place_of:
        c.order = [in_place_of.get(id(op), op) for op in c.order if id(op) not in dropped]
        _group_wholes(c)


def _group_wholes(c: Chunk) -> None:
    """Whole ops of the same parent, up to WHOLE_GROUP in journal order, become one
    "wholes" op in the place of the last of them (its own lane)."""
    groups: dict[Any, list[Op]] = {}
    for op in c.order:
        if op.kind == "whole":
            groups.setdefault(op.parts[0].ev.get("parent"), []).append(op)
    in_place_of: dict[int, Op] = {}
    dropped: set[int] = set()
    for members in groups.values():
        for i in range(0, len(members), WHOLE_GROUP):
            group = members[i:i + WHOLE_GROUP]
            if len(group) < 2:
                continue
            op = Op(f"\0wholes:{group[0].key}", "wholes", ev=group[-1].ev, parts=group,
                    after=list({id(a): a for m in group for a in m.after}.values()))
            for m in group:
                del c.lanes[m.key]
            c.lanes[op.key] = [op]
            in_place_of[id(group[-1])] = op
            dropped.update(id(m) for m in group[:-1])
    if in_place_of:
        c.order = [in_place_of.get(id(op), op) for op in c.order if id(op) not in dropped]


def _append(c: Chunk, lane: list[Op], op: Op) -> None:
    lane.append(op)
    c.order.append(op)


def run(c: Chunk, do: Callable[[Op], None], workers: int) -> None:
    """do(op) for every op: with one worker in journal order; with more, up to ``workers``
    lanes at a time, each op once the op before it in its lane and its ``after`` are done.
    The first exception stops new ops; it is raised once the running ones end."""
    if workers <= 1:
        for op in c.order:
            do(op)
            op.finish()
        return
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    nxt = {key: 0 for key in c.lanes}
    busy: set[str] = set()
    running: dict[Future[None], Op] = {}
    failed: BaseException | None = None
    # a pool per chunk: its threads end with it (netrain's exit joins threads)
    with ThreadPoolExecutor(workers, thread_name_prefix="netrain-lane") as pool:
        while True:
            if failed is None:
                for key, lane in c.lanes.items():
                    if len(running) >= workers:
                        break
                    i = nxt[key]
                    if key in busy or i >= len(lane):
                        continue
                    op = lane[i]
                    if all(a.done for a in op.after):
                        busy.add(key)
                        running[pool.submit(do, op)] = op
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                op = running.pop(f)
                busy.discard(op.key)
                exc = f.exception()
                if exc is not None:
                    failed = failed or exc
                    continue
                op.finish()
                nxt[op.key] += 1
    if failed is not None:
        raise failed
    if any(nxt[k] < len(lane) for k, lane in c.lanes.items()):  # pragma: no cover
        raise RuntimeError("journal chunk: ops left waiting on each other")
