"""The tracking journal: torn lines, seq across writer sessions, flush timing, offsets."""

from __future__ import annotations

import json
import time
from pathlib import Path

from netrain.track.journal import (
    JournalWriter,
    ReadStats,
    journal_path,
    logged_steps,
    pending,
    read_events,
    read_state,
    run_status,
    state_path,
    write_state,
)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def test_journal_path_layout(tmp_path: Path) -> None:
    assert journal_path(tmp_path, "classifier-clu_one", 7) == \
        tmp_path / "journal" / "classifier-clu_one" / "7.jsonl"
    assert journal_path(tmp_path, "x", 0, retrain_key="abc-1") == \
        tmp_path / "journal" / "retrain" / "abc-1.jsonl"


def test_events_and_immediate_flush(tmp_path: Path) -> None:
    p = journal_path(tmp_path, "c-a", 0)
    w = JournalWriter(p, tmp_path, flush_every=3600)
    w.open_run("task", parent=None, name="t", experiment_id="5", tags={"a": 1, "n": None})
    # run events are durable at once
    first = [json.loads(x) for x in p.read_text().splitlines()]
    assert [e["ev"] for e in first] == ["run"]
    assert first[0]["tags"] == {"a": "1"} and first[0]["experiment_id"] == "5"
    assert first[0]["adopt"] is None and first[0]["parent"] is None
    w.log_params("task", {"flag": True, "lr": 0.1, "skip": None})
    w.log_metrics("task", 0, {"loss": 1.5})
    assert len(p.read_text().splitlines()) == 1  # buffered
    (tmp_path / "weights").mkdir()
    wf = tmp_path / "weights" / "w.h5"
    wf.write_bytes(b"x")
    w.log_artifacts("task", {"weights": wf})  # flushes everything before it, in order
    evs = [e for _, e in read_events(p)]
    assert [e["ev"] for e in evs] == ["run", "params", "metrics", "artifacts"]
    assert evs[1]["params"] == {"flag": "true", "lr": "0.1"}
    assert evs[3]["files"] == [["weights", "weights/w.h5"]]
    assert [e["seq"] for e in evs] == [1, 2, 3, 4]
    w.end_run("task", "FINISHED")
    w.close()
    assert [e["ev"] for _, e in read_events(p)][-2:] == ["end", "close"]


def test_flush_every_seconds(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    w = JournalWriter(p, tmp_path, flush_every=0.2)
    w.log_metrics("k", 0, {"loss": 1.0})
    assert not p.read_bytes()
    time.sleep(0.25)
    w.log_metrics("k", 1, {"loss": 0.5})  # checked on each call: now due
    assert [e["step"] for _, e in read_events(p)] == [0, 1]
    w.flush()


def test_torn_last_line_is_skipped_and_seq_continues(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    w = JournalWriter(p, tmp_path)
    w.open_run("k", parent=None, name="n", experiment_id="1", tags={})
    w.log_metrics("k", 0, {"loss": 1.0})
    w.flush()
    # a writer killed mid-line
    with open(p, "ab") as f:
        f.write(b'{"seq":3,"t":1,"ev":"metr')
    assert [e["seq"] for _, e in read_events(p)] == [1, 2]  # stops before the torn line
    w2 = JournalWriter(p, tmp_path)
    w2.log_metrics("k", 1, {"loss": 0.5})
    w2.flush()
    stats = ReadStats()
    evs = [e for _, e in read_events(p, 0, stats)]
    assert [e["seq"] for e in evs] == [1, 2, 3]
    assert stats.bad_lines == 1
    assert _lines(p)[2] == b'{"seq":3,"t":1,"ev":"metr'


def test_seq_continuity_across_sessions(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    for session in range(3):
        w = JournalWriter(p, tmp_path)
        w.open_run("k", parent=None, name="n", experiment_id="1", tags={})
        w.log_metrics("k", session, {"loss": 1.0})
        w.close()
    seqs = [e["seq"] for _, e in read_events(p)]
    assert seqs == list(range(1, 10))
    assert logged_steps(p) == {"k": 2}


def test_seq_found_behind_a_long_tail(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    w = JournalWriter(p, tmp_path)
    w.log_metrics("k", 0, {"loss": 1.0})
    w.flush()
    with open(p, "ab") as f:  # 200 kB of garbage lines after the last event
        f.write((b"x" * 999 + b"\n") * 200)
    assert JournalWriter(p, tmp_path).seq == 1


def test_read_events_offsets_resume_exactly(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    w = JournalWriter(p, tmp_path)
    for step in range(5):
        w.log_metrics("k", step, {"loss": float(step)})
    w.flush()
    all_events = list(read_events(p))
    assert all_events[-1][0] == p.stat().st_size
    off = all_events[1][0]
    rest = [e["step"] for _, e in read_events(p, off)]
    assert rest == [2, 3, 4]
    assert [e["step"] for _, e in read_events(p, off, limit=2)] == [2, 3]
    assert list(read_events(tmp_path / "missing.jsonl")) == []


def test_run_status_and_pending(tmp_path: Path) -> None:
    p = journal_path(tmp_path, "c-a", 0)
    w = JournalWriter(p, tmp_path)
    w.open_run("task", parent=None, name="t", experiment_id="1", tags={})
    w.open_run("net0", parent="task", name="n", experiment_id="1", tags={})
    w.end_run("net0", "FAILED")
    assert run_status(p) == {"task": "RUNNING", "net0": "FAILED"}
    assert pending(tmp_path) == [p]
    write_state(p, {"offset": p.stat().st_size, "runs": {}})
    assert pending(tmp_path) == []
    assert read_state(p)["offset"] == p.stat().st_size
    with open(p, "ab") as f:  # a torn tail alone is not pending
        f.write(b'{"seq":9')
    assert pending(tmp_path) == []
    assert state_path(p).name == "0.jsonl.shipped.json"


def test_unwritable_journal_does_not_raise(tmp_path: Path, capsys: object) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    w = JournalWriter(blocker / "sub" / "j.jsonl", tmp_path)  # parent is a file
    w.open_run("k", parent=None, name="n", experiment_id="1", tags={})
    w.log_metrics("k", 0, {"loss": 1.0})
    w.close()
