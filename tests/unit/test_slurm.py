"""slurm (the parsers, sbatch, scancel) and the executor's one-squeue-one-sacct scheduler view,
with a fake runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netrain.define.batch import Batch, Manifest, write_manifest
from netrain.errors import SchedulerError
from netrain.execute import executor, slurm
from netrain.execute.slurm import (
    DEFAULT_MAX_ARRAY_SIZE,
    Result,
    expand_task_ids,
    parse_job_id,
    parse_job_states,
    parse_max_array_size,
    split_array,
)

SCONTROL = """Configuration data as of 2024-01-02T03:04:05
AccountingStorageBackupHost = (null)
MaxArraySize           = 16
MaxJobCount             = 10000
"""


def test_parse_max_array_size() -> None:
    assert parse_max_array_size(SCONTROL) == 16
    assert parse_max_array_size("MaxArraySize=40001") == 40001


def test_parse_max_array_size_missing_gives_default() -> None:
    assert parse_max_array_size("MaxJobCount = 10000\n") == DEFAULT_MAX_ARRAY_SIZE
    assert parse_max_array_size("") == DEFAULT_MAX_ARRAY_SIZE
    assert parse_max_array_size("NotMaxArraySize = 3\n") == DEFAULT_MAX_ARRAY_SIZE


@pytest.mark.parametrize("out, job", [
    ("123", "123"),
    ("123\n", "123"),
    ("123;cluster", "123"),
    ("123;cluster\n", "123"),
    ("sbatch: warning: something\n456\n", "456"),
])
def test_parse_job_id(out: str, job: str) -> None:
    assert parse_job_id(out) == job


@pytest.mark.parametrize("out", ["", "  \n", "Submitted batch job 123", "abc", "12a", ";cluster",
                                 "-5"])
def test_parse_job_id_garbage(out: str) -> None:
    with pytest.raises(SchedulerError, match="instead of a job id"):
        parse_job_id(out)


def test_split_array_2500_by_1001() -> None:
    chunks = split_array(range(2500), 1001)
    assert [off for off, _ in chunks] == [0, 1001, 2002]
    recovered = []
    for off, local in chunks:
        assert all(0 <= i < 1001 for i in local)
        recovered.extend(off + i for i in local)
    assert recovered == list(range(2500))
    assert chunks[0][1] == list(range(1001))
    assert chunks[2][1] == list(range(498))


def test_split_array_small_and_sparse() -> None:
    assert split_array([3, 1, 1], 1001) == [(0, [1, 3])]
    assert split_array([5, 40], 16) == [(0, [5]), (32, [8])]
    assert split_array([], 16) == []


@pytest.mark.parametrize("m", [0, -1])
def test_split_array_unusable_limit(m: int) -> None:
    with pytest.raises(SchedulerError):
        split_array([1], m)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=5000)), st.integers(min_value=1, max_value=1200))
def test_split_array_property(indices: set[int], m: int) -> None:
    chunks = split_array(sorted(indices), m)
    offsets = [off for off, _ in chunks]
    assert offsets == sorted(set(offsets))
    recovered = []
    for off, local in chunks:
        assert off % m == 0
        assert local and local == sorted(local)
        assert all(0 <= i < m for i in local)
        recovered.extend(off + i for i in local)
    assert recovered == sorted(indices)


@pytest.mark.parametrize("text, expected", [
    ("[5-9%2]", [5, 6, 7, 8, 9]),
    ("[1,3-4]", [1, 3, 4]),
    ("7", [7]),
    ("[0]", [0]),
    ("[1-2,5,7-8%3]", [1, 2, 5, 7, 8]),
])
def test_expand_task_ids(text: str, expected: list[int]) -> None:
    assert expand_task_ids(text) == expected


SACCT = """123_4|FAILED
123_[5-9]|PENDING
124|COMPLETED
123_7|CANCELLED by 0
123_10|TIMEOUT
125_[0-2%1]|PENDING

garbage line
|RUNNING
"""


def test_parse_job_states_realistic_sacct() -> None:
    states = parse_job_states(SACCT)
    assert states["123"] == {4: "FAILED", 5: "PENDING", 6: "PENDING", 7: "CANCELLED",
                             8: "PENDING", 9: "PENDING", 10: "TIMEOUT"}
    assert states["124"] == {-1: "COMPLETED"}
    assert states["125"] == {0: "PENDING", 1: "PENDING", 2: "PENDING"}
    assert set(states) == {"123", "124", "125"}


def test_parse_job_states_squeue_format() -> None:
    assert parse_job_states("200_3|RUNNING\n200_4|pending\n") == {
        "200": {3: "RUNNING", 4: "PENDING"}}


# ---------------------------------------------------------------------- scheduler view

class FakeRunner:
    """Answers sacct/squeue with canned text and records every call."""

    def __init__(self, answers: dict[str, Result]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Result:
        self.calls.append(list(argv))
        return self.answers.get(argv[0], Result(127, "", f"{argv[0]}: command not found"))

    def commands(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def batch(tmp_path: Path, make_manifest: Callable[..., Manifest]) -> Batch:
    d = tmp_path / "20240102-030405-abcd"
    d.mkdir()
    write_manifest(d, make_manifest())
    return Batch.load(d)


SACCT_VIEW = """101_4|FAILED
101_[5-9]|PENDING
102_7|CANCELLED by 0
103_0|COMPLETED
999_1|RUNNING
"""
SQUEUE_VIEW = "101_5|RUNNING\n102_3|PENDING\n"


def test_scheduler_view_one_sacct_one_squeue(batch: Batch) -> None:
    runner = FakeRunner({"sacct": Result(0, SACCT_VIEW, ""),
                         "squeue": Result(0, SQUEUE_VIEW, "")})
    v = executor.scheduler_view([batch], runner)
    view, note = v.tasks, v.note
    assert note == ""
    assert sorted(runner.commands()) == ["sacct", "squeue"]
    for call in runner.calls:
        assert call[call.index("-j") + 1] == "101,102,103"  # the three SLURM jobs, no local one
    sacct = next(c for c in runner.calls if c[0] == "sacct")
    assert "-X" in sacct and "-P" in sacct and "-n" in sacct
    assert view == {batch.id: {
        "classifier.clu_one": {4: ("101", "FAILED"), 5: ("101", "RUNNING"),
                               6: ("101", "PENDING"), 7: ("101", "PENDING"),
                               8: ("101", "PENDING"), 9: ("101", "PENDING"),
                               1001 + 7: ("102", "CANCELLED"), 1001 + 3: ("102", "PENDING")},
        "autoencoder.classical": {0: ("103", "COMPLETED")},
    }}


def test_scheduler_view_two_batches_still_two_calls(
        tmp_path: Path, make_manifest: Callable[..., Manifest]) -> None:
    batches = []
    for bid, job in (("b1", "301"), ("b2", "302")):
        m = make_manifest(id=bid)
        for model in m.models:
            for j in model.jobs:
                j.job_id = job + j.job_id  # unique ids per batch
        (tmp_path / bid).mkdir()
        write_manifest(tmp_path / bid, m)
        batches.append(Batch.load(tmp_path / bid))
    runner = FakeRunner({"sacct": Result(0, "301101_2|FAILED\n302103_1|COMPLETED\n", ""),
                         "squeue": Result(0, "", "")})
    view = executor.scheduler_view(batches, runner).tasks
    assert sorted(runner.commands()) == ["sacct", "squeue"]
    assert view == {"b1": {"classifier.clu_one": {2: ("301101", "FAILED")}},
                    "b2": {"autoencoder.classical": {1: ("302103", "COMPLETED")}}}


def test_scheduler_view_without_accounting(batch: Batch) -> None:
    runner = FakeRunner({
        "sacct": Result(1, "", "sacct: error: Slurm accounting storage is disabled\n"),
        "squeue": Result(0, SQUEUE_VIEW, ""),
    })
    v = executor.scheduler_view([batch], runner)
    view, note = v.tasks, v.note
    assert "Slurm accounting storage is disabled" in note
    assert note.startswith("note:")
    assert sorted(runner.commands()) == ["sacct", "squeue"]
    assert view == {batch.id: {"classifier.clu_one": {5: ("101", "RUNNING"),
                                                      1004: ("102", "PENDING")}}}


def test_scheduler_view_newest_job_of_an_index_wins(
        tmp_path: Path, make_manifest: Callable[..., Manifest]) -> None:
    from netrain.define.batch import Job

    m = make_manifest()
    m.model("autoencoder.classical").jobs.append(Job("1100", "3", "slurm", "later", 0))
    (tmp_path / "b").mkdir()
    write_manifest(tmp_path / "b", m)
    # sacct lists the resubmission first: the order of its lines must not matter
    runner = FakeRunner({"sacct": Result(0, "1100_3|RUNNING\n103_3|FAILED\n", ""),
                         "squeue": Result(0, "", "")})
    view = executor.scheduler_view([Batch.load(tmp_path / "b")], runner).tasks
    assert view[m.id]["autoencoder.classical"] == {3: ("1100", "RUNNING")}


def test_scheduler_view_no_slurm_jobs_makes_no_calls(
        tmp_path: Path, make_manifest: Callable[..., Manifest]) -> None:
    m = make_manifest()
    for model in m.models:
        model.jobs = [j for j in model.jobs if j.executor != "slurm"]
    (tmp_path / "b").mkdir()
    write_manifest(tmp_path / "b", m)
    runner = FakeRunner({})
    assert executor.scheduler_view([Batch.load(tmp_path / "b")], runner) == \
        executor.SchedulerView()
    assert runner.calls == []


def test_task_jobs(batch: Batch) -> None:
    assert executor.task_jobs(batch) == {"101": ("classifier.clu_one", 0),
                                       "102": ("classifier.clu_one", 1001),
                                       "103": ("autoencoder.classical", 0)}


def test_sbatch_passes_array_and_offset(batch: Batch) -> None:
    runner = FakeRunner({"sbatch": Result(0, "555;cluster\n", "")})
    assert slurm.sbatch("scripts/x.sh", "0-9%2", 1001, runner) == "555"
    assert runner.calls == [["sbatch", "--parsable", "--array=0-9%2",
                             "--export=ALL,NETRAIN_INDEX_OFFSET=1001", "scripts/x.sh"]]


def test_sbatch_refusal_is_a_scheduler_error() -> None:
    runner = FakeRunner({"sbatch": Result(1, "", "sbatch: error: Invalid partition name\n")})
    with pytest.raises(SchedulerError, match="Invalid partition name"):
        slurm.sbatch("s.sh", "0-1", 0, runner)


def test_submit_array_splits_over_max_array_size() -> None:
    ids = iter(["701", "702", "703"])
    calls: list[list[str]] = []

    def runner(argv: Sequence[str]) -> Result:
        calls.append(list(argv))
        if argv[0] == "scontrol":
            return Result(0, SCONTROL, "")
        return Result(0, next(ids) + "\n", "")

    jobs = slurm.submit_array("s.sh", list(range(40)), throttle=3, runner=runner,
                              env={"NETRAIN_RETRAIN_KEY": "k"})
    assert [c[0] for c in calls] == ["scontrol", "sbatch", "sbatch", "sbatch"]
    assert [c[2] for c in calls[1:]] == ["--array=0-15%3", "--array=0-15%3", "--array=0-7%3"]
    assert calls[2][3] == "--export=ALL,NETRAIN_INDEX_OFFSET=16,NETRAIN_RETRAIN_KEY=k"
    assert [(j.job_id, j.indices[0], j.indices[-1], j.offset) for j in jobs] == [
        ("701", 0, 15, 0), ("702", 16, 31, 16), ("703", 32, 39, 32)]


def test_max_array_size_falls_back_when_scontrol_fails() -> None:
    assert slurm.max_array_size(FakeRunner({})) == DEFAULT_MAX_ARRAY_SIZE
    assert slurm.max_array_size(FakeRunner({"scontrol": Result(0, SCONTROL, "")})) == 16


def test_cancel() -> None:
    runner = FakeRunner({"scancel": Result(0, "", "")})
    slurm.cancel([], runner)
    assert runner.calls == []
    slurm.cancel(["1", "2"], runner)
    assert runner.calls == [["scancel", "1", "2"]]
    with pytest.raises(SchedulerError, match="Invalid job id"):
        slurm.cancel(["x"], FakeRunner({"scancel": Result(1, "", "Invalid job id x")}))
