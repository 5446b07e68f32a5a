"""A packed group's networks start and finish together: the task's record is written once
for the block, not once per network (each write rewrites the whole, growing record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netrain.execute.records import NetRecord, new_record, read_record
from netrain.train import task as task_mod
from netrain.train.task import TaskRunner


def runner(tmp_path: Path) -> TaskRunner:
    t = TaskRunner.__new__(TaskRunner)  # only the record's side: no batch, no identity
    t.rpath = tmp_path / "records" / "m" / "0.json"
    t.record = new_record("c.a", 0, None, "", "local", "", "")
    t._batching, t._unsaved, t._saved_at = 0, False, 0.0
    return t


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = task_mod.write_record

    def counting(path: Path, record: Any) -> None:
        seen.append(len(record.nets))
        real(path, record)

    monkeypatch.setattr(task_mod, "write_record", counting)
    return seen


def test_a_groups_record_writes_coalesce(tmp_path: Path, writes: list[int]) -> None:
    t = runner(tmp_path)
    with t.records_batched():
        for i in range(100):
            t.record.nets[str(i)] = NetRecord(state="running", key=f"k{i}")
            t.save_record()
    # the first write, then the rest at the block's end (RECORD_LAG is a second)
    assert len(writes) <= 3 and writes[-1] == 100
    rec = read_record(t.rpath)
    assert rec is not None and len(rec.nets) == 100


def test_the_block_writes_what_it_holds_when_it_fails(tmp_path: Path,
                                                       writes: list[int]) -> None:
    t = runner(tmp_path)
    t.save_record()
    with pytest.raises(RuntimeError), t.records_batched():
        t.record.nets["0"] = NetRecord(state="finished", key="k0")
        t.save_record()
        raise RuntimeError("a network's save failed")
    rec = read_record(t.rpath)
    assert rec is not None and rec.nets["0"].state == "finished"


def test_outside_a_block_every_change_is_written(tmp_path: Path, writes: list[int]) -> None:
    t = runner(tmp_path)
    for i in range(5):
        t.record.nets[str(i)] = NetRecord(state="running", key=f"k{i}")
        t.save_record()
    assert writes == [1, 2, 3, 4, 5]
