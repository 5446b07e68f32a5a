"""The shipper's retry policy: which errors are transient, backoff until success, a deadline
or give-up bound, permanent errors at once; one shipper per journal."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from netrain.track.mlflow_ship import is_transient
from netrain.track.shipper import Busy, GiveUp, Shipper


class FakeMlflowError(Exception):
    def __init__(self, message: str, error_code: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code


@pytest.mark.parametrize(("exc", "transient"), [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (TimeoutError("timed out"), True),
    (FakeMlflowError("API request to http://h/api/2.0/mlflow/runs/log-batch failed with "
                     "exception HTTPConnectionPool(host='h', port=1): Max retries exceeded"),
     True),
    (FakeMlflowError("API request to endpoint /x failed with error code 503 != 200"), True),
    (FakeMlflowError("(sqlite3.OperationalError) database is locked"), True),
    (FakeMlflowError("anything", error_code="TEMPORARILY_UNAVAILABLE"), True),
    (FakeMlflowError("Changing param values is not allowed.",
                     error_code="INVALID_PARAMETER_VALUE"), False),
    (FakeMlflowError("Run 'abc' not found", error_code="RESOURCE_DOES_NOT_EXIST"), False),
    (ValueError("bad"), False),
])
def test_transient_errors(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.fixture
def shipper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shipper:
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF", "0.01")
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF_MAX", "0.05")
    (tmp_path / "journal").mkdir()
    return Shipper(tmp_path / "journal" / "0.jsonl", tmp_path, "http://127.0.0.1:1")


def test_backoff_until_success(shipper: Shipper) -> None:
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise ConnectionRefusedError(111, "Connection refused")
        return "ok"

    assert shipper._call("test", flaky) == "ok"
    assert len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(g >= 0.004 for g in gaps)  # it waited between tries


def test_permanent_error_is_not_retried(shipper: Shipper) -> None:
    calls = []

    def refused() -> None:
        calls.append(1)
        raise FakeMlflowError("no", error_code="INVALID_PARAMETER_VALUE")

    with pytest.raises(FakeMlflowError):
        shipper._call("test", refused)
    assert calls == [1]


def test_internal_error_retried_a_few_times(shipper: Shipper) -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise FakeMlflowError("boom", error_code="INTERNAL_ERROR")

    with pytest.raises(FakeMlflowError):
        shipper._call("test", broken)
    assert len(calls) == 11


def test_deadline_and_give_up(shipper: Shipper) -> None:
    def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    shipper.deadline = time.monotonic() + 0.2
    t = time.monotonic()
    with pytest.raises(GiveUp, match="deadline"):
        shipper._call("test", down)
    assert time.monotonic() - t < 2
    shipper.deadline = None
    shipper.give_up_after = 0.2
    with pytest.raises(GiveUp, match="tracking failing"):
        shipper._call("test", down)


def test_one_shipper_per_journal(shipper: Shipper) -> None:
    with pytest.raises(Busy):
        Shipper(shipper.path, shipper.batch_dir, shipper.uri)
    shipper.close()
    Shipper(shipper.path, shipper.batch_dir, shipper.uri).close()


def test_database_layer_bad_request_is_retried_a_while(shipper: Shipper) -> None:
    calls = []

    def overloaded() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise FakeMlflowError("BAD_REQUEST: (sqlite3.IntegrityError) ... (Background on "
                                  "this error at: https://sqlalche.me/e/21/gkpj)",
                                  error_code="BAD_REQUEST")
        return "ok"

    assert shipper._call("test", overloaded) == "ok"


def test_follower_drains_when_its_writer_dies_while_tracking_is_down(
        shipper: Shipper, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer dies while the follower is retrying a call against a tracking server that
    never answers: the drain deadline starts then, and the follower stops within it (CI
    once waited 120 s for a follower whose writer had died during its first retry)."""
    import subprocess
    import sys

    from netrain.track.journal import JournalWriter
    from netrain.track.shipper import _pid_follower

    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF", "0.5")
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF_MAX", "60")
    with JournalWriter(shipper.path, shipper.batch_dir) as w:
        w.open_run("t", parent=None, name="task", experiment_id="0", tags={})
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        alive = _pid_follower(shipper, writer.pid, drain=1.0)
        assert alive()  # the first check sees it alive: shipping starts, and fails
        t = time.monotonic()
        report = shipper.follow(alive)
        took = time.monotonic() - t
    finally:
        writer.wait()
    assert report.stopped and "deadline" in report.stopped
    assert not report.complete
    assert took < 15, took  # sleep 1.5 s + drain 1 s + a retry's backoff, not forever


def test_stop_event_ends_retrying_at_once(shipper: Shipper) -> None:
    """Another journal found tracking unreachable: this one gives up at its next failure
    instead of retrying for give_up_after (as `netrain sync` and the courier share it)."""
    import threading

    def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    shipper.give_up_after = 60
    shipper.stop = threading.Event()
    threading.Timer(0.3, shipper.stop.set).start()
    t = time.monotonic()
    with pytest.raises(GiveUp, match="tracking unreachable"):
        shipper._call("test", down)
    assert time.monotonic() - t < 1.5
    assert shipper.failing_for() > 0.2  # the courier reads how long a call has failed
