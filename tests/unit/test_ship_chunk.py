"""A journal chunk as lanes: a run's calls in journal order, a child created after its
parent, a parent ended after its children, tags joined to create_run, lines written twice
dropped; and the lanes run several at a time within those rules."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from netrain.track import ship_chunk


def packed_task(nets: int) -> list[tuple[int, dict[str, Any]]]:
    """The events of a packed task's journal, in the order netrain.train writes them."""
    evs: list[dict[str, Any]] = [{"ev": "run", "key": "t", "parent": None, "tags": {"a": 1}},
                                 {"ev": "params", "key": "t", "params": {"n": nets}}]
    keys = [f"t/{n}" for n in range(nets)]
    for k in keys:
        evs += [{"ev": "run", "key": k, "parent": "t", "tags": {"s": "running"}},
                {"ev": "params", "key": k, "params": {"lr": 0.1}}]
    for epoch in range(3):
        evs += [{"ev": "metrics", "key": k, "step": epoch, "t": 5, "values": {"loss": 1.0}}
                for k in keys]
    for k in keys:
        evs += [{"ev": "tags", "key": k, "tags": {"s": "finished"}},
                {"ev": "artifacts", "key": k, "files": [["weights", "w.h5"]]},
                {"ev": "end", "key": k, "status": "FINISHED"}]
    evs += [{"ev": "tags", "key": "t", "tags": {"s": "finished"}},
            {"ev": "end", "key": "t", "status": "FINISHED"}, {"ev": "close"}]
    for i, ev in enumerate(evs):
        ev["seq"] = i + 1
    return [(100 * (i + 1), ev) for i, ev in enumerate(evs)]


def test_plan_makes_one_lane_a_run() -> None:
    c = ship_chunk.plan(packed_task(3), last_seq=0, inflight_end=0)
    # a network's whole life is in the chunk: one "whole" op; the networks of one task go
    # together, one request to netrain server
    [group] = [lane for key, lane in c.lanes.items() if key != "t"]
    assert [op.kind for op in group] == ["wholes"]
    assert [w.key for w in group[0].parts] == ["t/0", "t/1", "t/2"]
    whole = group[0].parts[1]
    assert whole.kind == "whole"
    assert [op.kind for op in whole.parts] == ["run", "send", "artifacts", "end"]
    run, send, _, _ = whole.parts
    assert run.late_tags == {"s": "finished"}  # set with create_run, not in a log_batch
    assert send.buf is not None and send.buf.tags == {}
    assert send.buf.params == {"lr": "0.1"} and [m[3] for m in send.buf.metrics] == [0, 1, 2]
    assert whole.after == [c.lanes["t"][0]] == group[0].after  # created after their parent
    # the task has children in the chunk: call by call, ended after its networks' ends
    assert [op.kind for op in c.lanes["t"]] == ["run", "send", "end"]
    ends = {w.parts[-1] for w in group[0].parts}
    assert set(c.lanes["t"][-1].after) == ends
    # in journal order, a group takes its last end's place
    assert [(op.key, op.kind) for op in c.order] == [
        ("t", "run"), ("t", "send"), (group[0].key, "wholes"), ("t", "end")]
    # done: its runs' ops are done too (what the task's end waits for)
    group[0].finish()
    assert all(op.done for op in ends)
    assert c.closed_at == 100 * len(packed_task(3)) and c.last_seq == len(packed_task(3))


def test_plan_groups_at_most_whole_group_runs() -> None:
    c = ship_chunk.plan(packed_task(ship_chunk.WHOLE_GROUP + 5), last_seq=0, inflight_end=0)
    groups = [lane[0] for key, lane in c.lanes.items() if key != "t"]
    assert [len(g.parts) for g in groups] == [ship_chunk.WHOLE_GROUP, 5]


def test_plan_merges_only_a_run_whose_whole_life_is_in_the_chunk() -> None:
    events = packed_task(2)
    cut = next(i for i, (_, ev) in enumerate(events) if ev == {**ev, "ev": "end", "key": "t/1"})
    c = ship_chunk.plan(events[:cut], last_seq=0, inflight_end=0)  # t/1's end not yet written
    assert c.lanes["t/0"][0].kind == "whole"  # alone: no group
    assert [op.kind for op in c.lanes["t/1"]] == ["run", "send", "artifacts"]
    rest = ship_chunk.plan(events[cut:], last_seq=events[cut - 1][1]["seq"], inflight_end=0)
    assert [op.kind for op in rest.lanes["t/1"]] == ["end"]
    # a run event a dead session was shipping is marked: it may exist in MLflow already
    again = ship_chunk.plan(events, last_seq=0, inflight_end=events[3][0])
    t0, t1 = again.lanes["\0wholes:t/0"][0].parts
    assert t0.parts[0].maybe_sent and not t1.parts[0].maybe_sent


def test_plan_drops_lines_shipped_and_marks_points_maybe_sent() -> None:
    events = packed_task(2)
    c = ship_chunk.plan(events, last_seq=4, inflight_end=events[10][0])
    assert "t" not in c.lanes or c.lanes["t"][0].kind != "run"  # seq 1..4 were shipped
    sent = [m for op in c.order for part in op.parts or [op] if part.buf
            for m in part.buf.metrics]
    assert {m[4] for m in sent} == {True, False}  # in the dead session's range or past it
    assert c.events == len(events) - 4


@pytest.mark.parametrize("workers", [1, 4])
def test_run_keeps_each_lane_in_order_and_parents_first(workers: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ship_chunk, "WHOLE_GROUP", 2)
    c = ship_chunk.plan(packed_task(12), last_seq=0, inflight_end=0)
    log: list[tuple[str, str]] = []
    lock = threading.Lock()
    active = [0, 0]  # now, most at once

    def do(op: ship_chunk.Op) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(random.uniform(0, 0.004))
        with lock:
            log.append((op.key, op.kind))
            active[0] -= 1

    ship_chunk.run(c, do, workers)
    assert len(log) == len(c.order)
    for key, lane in c.lanes.items():
        assert [k for k, _ in log if k == key] == [key] * len(lane)
        assert [kind for k, kind in log if k == key] == [op.kind for op in lane]
    first_child = min(i for i, (key, _) in enumerate(log) if key != "t")
    assert log.index(("t", "run")) < first_child
    assert log[-1] == ("t", "end")
    assert active[1] == 1 if workers == 1 else 1 < active[1] <= workers


def test_run_raises_the_first_error_after_the_running_ops_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ship_chunk, "WHOLE_GROUP", 2)
    c = ship_chunk.plan(packed_task(8), last_seq=0, inflight_end=0)
    done: list[ship_chunk.Op] = []

    def do(op: ship_chunk.Op) -> None:
        if "t/3" in [m.key for m in op.parts]:
            raise RuntimeError("boom")
        time.sleep(0.002)
        done.append(op)

    with pytest.raises(RuntimeError, match="boom"):
        ship_chunk.run(c, do, 4)
    assert ("t", "end") not in [(op.key, op.kind) for op in done]
    assert len(done) < len(c.order) - 1
