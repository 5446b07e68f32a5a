"""The shipper process a task starts beside itself follows the plan: never (and says why),
or only once the task has trained long enough, so a short task starts none."""

from __future__ import annotations

import math
import time
from pathlib import Path

from netrain.track import plan
from netrain.track.task_shipper import TaskShipper


def test_a_one_writer_task_starts_no_shipper_and_says_why(tmp_path: Path) -> None:
    said: list[str] = []
    s = TaskShipper(tmp_path / "j.jsonl", tmp_path, "sqlite:///x.db",
                    plan.TaskShipping("", math.inf, 60.0, plan.ONE_WRITER))
    s.start(said.append)
    s.wait()
    assert s.process is None and said == [plan.ONE_WRITER]


def test_a_task_that_ends_before_its_delay_never_starts_one(tmp_path: Path) -> None:
    said: list[str] = []
    s = TaskShipper(tmp_path / "j.jsonl", tmp_path, "http://t:5000",
                    plan.TaskShipping("task", 0.3, 60.0))
    s.start(said.append)
    s.wait()  # the task ended within its 0.3 s
    time.sleep(0.6)  # past the delay: the timer was cancelled
    assert s.process is None and said == []
