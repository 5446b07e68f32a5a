"""status: reconciling a task's own record with the scheduler's word."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from netrain.define.batch import Batch, Manifest, ModelEntry, Segment, write_manifest
from netrain.errors import BatchError
from netrain.execute.records import NetRecord, TaskRecord, record_path, write_record
from netrain.execute.status import (
    State,
    batch_status,
    reconcile,
    scheduler_state,
    task_status,
)


@pytest.mark.parametrize("own, scheduler, expected", [
    # the brief's table
    (State.RUNNING, "TIMEOUT", State.TIMEOUT),
    (State.FINISHED, "FAILED", State.FINISHED),
    (State.PENDING, "RUNNING", State.RUNNING),
    (State.RUNNING, "COMPLETED", State.DIED),
    (State.DIED, "CANCELLED", State.CANCELLED),
    # more of it
    (State.RUNNING, "CANCELLED by 1000", State.CANCELLED),
    (State.RUNNING, "OUT_OF_MEMORY", State.OUT_OF_MEMORY),
    (State.RUNNING, "NODE_FAIL", State.NODE_FAIL),
    (State.RUNNING, "PREEMPTED", State.PREEMPTED),
    (State.RUNNING, "RUNNING", State.RUNNING),
    (State.RUNNING, "COMPLETING", State.RUNNING),
    (State.PENDING, "PENDING", State.PENDING),
    (State.PENDING, "COMPLETED", State.DIED),
    (State.PENDING, "FAILED", State.FAILED),
    (State.FAILED, "COMPLETED", State.FAILED),
    (State.KILLED, "CANCELLED", State.KILLED),
    (State.FINISHED, "TIMEOUT", State.FINISHED),
    (State.DIED, "FAILED", State.DIED),
    (State.DIED, "RUNNING", State.RUNNING),
    (State.DIED, "PENDING", State.PENDING),
    (State.RUNNING, "SOMETHING_NEW", State.RUNNING),
    (State.RUNNING, "", State.RUNNING),
    (State.PENDING, "timeout", State.TIMEOUT),
])
def test_reconcile(own: State, scheduler: str, expected: State) -> None:
    assert reconcile(own, scheduler) is expected


@pytest.mark.parametrize("word, state", [
    ("COMPLETED", State.FINISHED),
    ("CANCELLED by 0", State.CANCELLED),
    ("CANCELLED+", State.CANCELLED),
    ("running", State.RUNNING),
    ("DEADLINE", State.TIMEOUT),
    ("", State.UNKNOWN),
    ("WHATEVER", State.UNKNOWN),
])
def test_scheduler_state(word: str, state: State) -> None:
    assert scheduler_state(word) is state


def test_is_terminal() -> None:
    live = {State.PENDING, State.RUNNING, State.UNKNOWN}
    for s in State:
        assert s.is_terminal is (s not in live), s
    assert State.FINISHED.is_terminal and not State.FINISHED.is_failure
    assert State.DIED.is_failure and State.TIMEOUT.is_failure
    assert not State.UNKNOWN.is_failure and not State.RUNNING.is_failure


def model() -> ModelEntry:
    return ModelEntry("classifier", "clu_one", segments=[
        Segment(0, 4, 4, 5, 100, False), Segment(4, 2, 7, 5, 100, True)])


def record(state: str = "running", nets: tuple[str, ...] = ("finished", "failed", "running",
                                                            "killed")) -> TaskRecord:
    return TaskRecord(model="classifier.clu_one", index=1, state=state, attempt=2,
                      slurm_job_id="101_1", log="logs/x.out", parent_run_id="abc", error="boom",
                      nets={str(i): NetRecord(state=s) for i, s in enumerate(nets)})


def test_task_status_without_record_is_pending() -> None:
    st = task_status(model(), 1, None)
    assert st.state is State.PENDING
    assert (st.model, st.index, st.nets) == ("classifier.clu_one", 1, 4)
    assert st.finished == st.failed == st.running == 0
    assert task_status(model(), 5, None).nets == 7  # second segment


def test_task_status_without_record_and_a_scheduler_word() -> None:
    st = task_status(model(), 1, None, ("101", "RUNNING"))
    assert st.state is State.RUNNING and st.scheduler == "RUNNING"


def test_task_status_from_a_record() -> None:
    st = task_status(model(), 1, record())
    assert st.state is State.RUNNING
    assert (st.finished, st.failed, st.running) == (1, 2, 1)  # failed counts killed nets too
    assert (st.log, st.error, st.run_id, st.slurm_job_id, st.attempt) == (
        "logs/x.out", "boom", "abc", "101_1", 2)
    assert st.scheduler == ""


@pytest.mark.parametrize("state, expected", [
    ("running", State.RUNNING), ("finished", State.FINISHED), ("failed", State.FAILED),
    ("killed", State.KILLED), ("died", State.DIED), ("weird", State.UNKNOWN),
])
def test_task_status_record_states(state: str, expected: State) -> None:
    assert task_status(model(), 1, record(state)).state is expected


def test_task_status_scheduler_ended_a_running_task() -> None:
    st = task_status(model(), 1, record(), ("101", "TIMEOUT"))
    assert st.state is State.TIMEOUT and st.scheduler == "TIMEOUT"
    assert (st.finished, st.failed, st.running) == (1, 3, 0)  # the running net died with it


def test_task_status_scheduler_still_running() -> None:
    st = task_status(model(), 1, record(), ("101", "RUNNING"))
    assert st.state is State.RUNNING and st.running == 1


def test_task_status_record_of_an_earlier_job_does_not_decide() -> None:
    # a failed attempt in job 101, resubmitted as job 205 which is now queued / running
    old = record("failed")
    for word, state in (("PENDING", State.PENDING), ("RUNNING", State.RUNNING)):
        st = task_status(model(), 1, old, ("205", word))
        assert st.state is state, word
        assert (st.finished, st.failed, st.running) == (0, 0, 0)
    assert task_status(model(), 1, old, ("205", "TIMEOUT")).state is State.TIMEOUT
    # the same job's word does not override the record's own closing
    assert task_status(model(), 1, old, ("101", "COMPLETED")).state is State.FAILED


def test_task_status_newer_job_completed_without_a_record() -> None:
    assert task_status(model(), 1, record("finished"), ("205", "COMPLETED")).state \
        is State.FINISHED
    assert task_status(model(), 1, record("running"), ("205", "COMPLETED")).state is State.DIED


def test_task_status_unknown_index() -> None:
    with pytest.raises(BatchError, match="no array task 6"):
        task_status(model(), 6, None)


def test_batch_status_reads_records(tmp_path: Path,
                                    make_manifest: Callable[..., Manifest]) -> None:
    d = tmp_path / "b"
    d.mkdir()
    m = make_manifest()
    write_manifest(d, m)
    batch = Batch.load(d)
    rec = TaskRecord(model="classifier.chransynth", index=2, state="finished",
                     nets={str(i): NetRecord(state="finished") for i in range(32)})
    write_record(record_path(d, "classifier-chransynth", 2), rec)
    (d / "records" / "classifier-chransynth" / "3.json").write_text("{not json")
    bs = batch_status(batch, {"classifier.chransynth": {4: ("104", "RUNNING")}})
    ms = {x.key: x for x in bs.models}
    chr_ = ms["classifier.chransynth"]
    assert [t.state for t in chr_.tasks] == [State.PENDING, State.PENDING, State.FINISHED,
                                             State.PENDING, State.RUNNING, State.PENDING]
    assert chr_.planned == 4 * 32 + 2 * 16
    assert chr_.count("finished") == 32
    assert bs.planned == m.networks
    assert len(ms["classifier.clu_one"].tasks) == 1500


def test_a_record_from_a_newer_netrain_is_read_not_dropped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from netrain.execute.records import read_record

    path = tmp_path / "0.json"
    path.write_text(json.dumps({
        "model": "a.b", "index": 0, "state": "finished", "future_field": 3,
        "nets": {"0": {"state": "finished", "run_id": "r", "future_net_field": "x"}}}))
    rec = read_record(path)
    assert rec is not None and rec.state == "finished" and rec.nets["0"].run_id == "r"
    assert rec.extra == {"future_field": 3}
