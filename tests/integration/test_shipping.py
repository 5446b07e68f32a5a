"""Shipping journals into a real MLflow SQLite store: everything arrives, exactly once, after
kills and replays; permanent errors are recorded and shipping goes on; the launcher."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netrain.track.journal import JournalWriter, pending, read_state, state_path, write_state
from netrain.track.shipper import ship
from tests.integration.shipping import (
    ROOT,
    TaskSpec,
    client,
    env,
    make_batch,
    verify,
    write_task,
)

LAUNCHER = [sys.executable, "-m", "netrain.execute.launcher"]


@pytest.fixture
def sqlite_batch(tmp_path: Path) -> tuple[Path, str, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    batch, exp_id = make_batch(tmp_path, uri)
    return batch, exp_id, uri


def test_everything_arrives_once(sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    specs = [TaskSpec(0, nets=2, epochs=4), TaskSpec(1, nets=3, epochs=3)]
    journals = [write_task(batch, exp_id, s) for s in specs]
    assert pending(batch) == journals
    r = ship(journals[0], batch, uri)
    assert (r.created, r.ended, r.metric_points, r.artifacts) == (3, 3, 16, 3)
    assert r.complete and not r.errors
    ship(journals[1], batch, uri)
    got = verify(uri, exp_id, batch, specs)
    assert got == {"runs": 7, "points": 2 * 2 * 4 + 3 * 2 * 3}
    state = read_state(journals[0])
    assert state["ended"] is True and state["offset"] == journals[0].stat().st_size
    assert set(state["runs"]) == {"task-0", "net-0-0", "net-0-1"}
    assert pending(batch) == []
    again = ship(journals[0], batch, uri)  # nothing new: no call changes anything
    assert (again.events, again.created, again.reopened, again.metric_points) == (0, 0, 0, 0)
    verify(uri, exp_id, batch, specs)


def test_replay_after_lost_or_stale_state(sqlite_batch: tuple[Path, str, str]) -> None:
    """A state file lost, or one saved before a chunk that did reach MLflow: the runs are
    found by their netrain.key tag and no (metric, step) is logged twice."""
    batch, exp_id, uri = sqlite_batch
    spec = TaskSpec(0, nets=2, epochs=5)
    j = write_task(batch, exp_id, spec)
    ship(j, batch, uri)
    state = read_state(j)
    state_path(j).unlink()
    r = ship(j, batch, uri)
    assert r.created == 0 and r.reopened == 3 and r.metric_points == 0
    assert r.duplicates_dropped == 2 * 2 * 5
    verify(uri, exp_id, batch, [spec])
    # a session that died after sending a chunk, before saving the offset past it
    write_state(j, {**state, "offset": 0, "inflight": j.stat().st_size, "runs": state["runs"]})
    r = ship(j, batch, uri)
    assert r.metric_points == 0 and r.created == 0
    verify(uri, exp_id, batch, [spec])


def test_resumed_writer_session_reopens_its_run(sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    j = batch / "journal" / "c-a" / "0.jsonl"
    w = JournalWriter(j, batch)
    w.open_run("n", parent=None, name="n", experiment_id=exp_id, tags={})
    w.log_metrics("n", 0, {"loss": 1.0})
    w.end_run("n", "KILLED")
    w.close()
    ship(j, batch, uri)
    c = client(uri)
    run_id = read_state(j)["runs"]["n"]
    assert c.get_run(run_id).info.status == "KILLED"
    w = JournalWriter(j, batch)  # the same network resumed later (issue 10)
    w.open_run("n", parent=None, name="n", experiment_id=exp_id, tags={"resumed": "1"})
    w.log_metrics("n", 1, {"loss": 0.5})
    w.log_params("n", {"ok": 1})
    w.close()
    r = ship(j, batch, uri)
    assert r.reopened == 1 and r.created == 0
    run = c.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["resumed"] == "1"
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [0, 1]
    assert len(c.search_runs([exp_id])) == 1


def test_permanent_error_is_recorded_and_shipping_goes_on(
        sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    j = batch / "journal" / "c-a" / "0.jsonl"
    w = JournalWriter(j, batch)
    w.open_run("n", parent=None, name="n", experiment_id=exp_id, tags={})
    w.log_params("n", {"lr": 0.1})
    w.flush()
    ship(j, batch, uri)
    w.log_params("n", {"lr": 0.2, "batch": 32})  # MLflow refuses to change a param
    w.log_metrics("n", 0, {"loss": 1.0})
    w.log_artifacts("n", {"weights": batch / "weights" / "missing.h5"})
    w.open_run("orphan-child", parent="nobody", name="x", experiment_id=exp_id, tags={})
    w.end_run("n", "FINISHED")
    w.close()
    r = ship(j, batch, uri)
    assert r.complete
    state = read_state(j)
    kinds = [(e["key"], e["ev"]) for e in state["errors"]]
    assert ("n", "params") in kinds and ("n", "artifacts") in kinds
    assert ("orphan-child", "run") in kinds
    assert state["error_count"] == len(state["errors"]) == 3
    run = client(uri).get_run(state["runs"]["n"])
    assert run.data.params == {"lr": "0.1", "batch": "32"}
    assert run.data.metrics == {"loss": 1.0} and run.info.status == "FINISHED"


def test_sigkill_mid_ship_then_ship_again(sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    spec = TaskSpec(0, nets=12, epochs=15)
    j = write_task(batch, exp_id, spec)
    size = j.stat().st_size
    e = env()
    e["NETRAIN_SHIP_CHUNK_EVENTS"] = "7"
    kills = 0
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-m", "netrain.track.shipper", "once", str(j),
                              "--batch-dir", str(batch), "--uri", uri], cwd=ROOT, env=e,
                             stderr=subprocess.DEVNULL)
        start = read_state(j)["offset"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if read_state(j)["offset"] > start:
                time.sleep(0.05 * (kills + 1))
                break
            time.sleep(0.01)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    assert read_state(j)["offset"] < size
    r = ship(j, batch, uri)
    assert r.complete
    verify(uri, exp_id, batch, [spec])


def _launcher_batch(batch: Path, exit_code: int) -> None:
    """A batch MLproject whose entry point is a stand-in task writing the journal."""
    (batch / "mlproject").mkdir()
    (batch / "MLproject").write_text(
        "name: t\nentry_points:\n  train:\n    parameters:\n      class: string\n"
        "      architecture: string\n      trainingrun: string\n"
        "      retrain_of: {type: string, default: \"none\"}\n"
        "    command: \"python mlproject/entry.py --class {class} --architecture "
        "{architecture} --trainingrun {trainingrun}\"\n")
    (batch / "mlproject" / "entry.py").write_text(
        "import json, os, sys\nfrom pathlib import Path\n"
        "from tests.integration.shipping import TaskSpec, write_task\n"
        "assert os.environ['NETRAIN_SHIPPER'] == 'launcher'\n"
        "assert 'mlflow' not in sys.modules\n"
        "idx = int(sys.argv[sys.argv.index('--trainingrun') + 1])\n"
        "write_task(Path.cwd(), os.environ['MLFLOW_EXPERIMENT_ID'], TaskSpec(idx, 2, 3),"
        " path=Path(os.environ['NETRAIN_JOURNAL']))\n"
        "Path('tags.json').write_text(os.environ['NETRAIN_RUN_TAGS'])\n"
        f"sys.exit({exit_code})\n")


def test_launcher_ships_and_keeps_the_exit_code(sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    _launcher_batch(batch, exit_code=3)
    e = env()
    e["MLFLOW_TRACKING_URI"] = uri
    p = subprocess.run([*LAUNCHER, str(batch), "--experiment-id",
                        exp_id, "--env-manager", "local", "-P", "class=c", "-P",
                        "architecture=a", "-P", "trainingrun=4"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, p.stderr
    j = batch / "journal" / "c-a" / "4.jsonl"
    assert j.is_file() and pending(batch) == []
    verify(uri, exp_id, batch, [TaskSpec(4, 2, 3)])
    task = client(uri).get_run(read_state(j)["runs"]["task-4"])
    assert task.data.tags["mlflow.source.type"] == "PROJECT"
    assert task.data.tags["mlflow.project.entryPoint"] == "train"
    assert task.data.tags["mlflow.source.name"] == str(batch.resolve())
    assert json.loads((batch / "tags.json").read_text())["mlflow.user"]


def test_launcher_with_tracking_down_then_sync(sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    from netrain.track.server import free_port

    _launcher_batch(batch, exit_code=0)
    e = env()
    e["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # nobody listens
    e["NETRAIN_DRAIN_TIMEOUT"] = "2"
    t0 = time.monotonic()
    p = subprocess.run([*LAUNCHER, str(batch), "--experiment-id",
                        exp_id, "-P", "class=c", "-P", "architecture=a", "-P",
                        "trainingrun=0"], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 60
    assert "netrain sync" in p.stderr
    j = batch / "journal" / "c-a" / "0.jsonl"
    assert pending(batch) == [j]
    # the batch's own tracking (SQLite) is used by sync
    from netrain.track.sync import sync_batch

    lines: list[str] = []
    res = sync_batch(batch, uri, lines.append)
    assert res.shipped == 1 and not res.incomplete
    verify(uri, exp_id, batch, [TaskSpec(0, 2, 3)])


def test_retrain_journal_path(tmp_path: Path) -> None:
    from netrain.execute.launcher import journal_for

    p = journal_for(tmp_path, {"retrain_of": "0123456789abcdef0123", "class": "c"})
    assert p.parent == tmp_path / "journal" / "retrain"
    assert p.name.startswith("0123456789ab-") and p.name.endswith(".jsonl")
    assert journal_for(tmp_path, {"class": "c", "architecture": "a", "trainingrun": "9",
                                  "retrain_of": "none"}) == \
        tmp_path / "journal" / "c-a" / "9.jsonl"


def test_a_create_finished_after_the_client_gave_up(sqlite_batch: tuple[Path, str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The first create_run "times out" on the client, and the server creates that run
    later anyway (after the retry created one): the late one is deleted at the run's end."""
    import threading

    from netrain.track import mlflow_ship

    batch, exp_id, uri = sqlite_batch
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF", "0.01")
    real = mlflow_ship.create_run
    late: list[threading.Timer] = []

    def flaky_create(c, experiment_id, name, tags, start_time):  # type: ignore[no-untyped-def]
        if not late:
            late.append(threading.Timer(0.3, real, (c, experiment_id, name, tags, start_time)))
            late[0].start()
            raise TimeoutError("read timed out")
        return real(c, experiment_id, name, tags, start_time)

    monkeypatch.setattr(mlflow_ship, "create_run", flaky_create)
    j = batch / "journal" / "c-a" / "0.jsonl"
    w = JournalWriter(j, batch)
    w.open_run("n", parent=None, name="n", experiment_id=exp_id, tags={})
    w.log_metrics("n", 0, {"loss": 1.0})
    w.flush()
    r = ship(j, batch, uri)
    assert r.created == 1
    late[0].join()
    key = f"{batch.name}:n"
    c = client(uri)
    assert len(c.search_runs([exp_id], f"tags.`netrain.key` = '{key}'")) == 2
    assert "n" in read_state(j)["uncertain"] and pending(batch) == [j]
    w.end_run("n", "FINISHED")
    w.close()
    r = ship(j, batch, uri)
    assert r.duplicates_deleted == 1
    runs = c.search_runs([exp_id], f"tags.`netrain.key` = '{key}'")
    assert [x.info.run_id for x in runs] == [read_state(j)["runs"]["n"]]
    assert runs[0].data.metrics == {"loss": 1.0}


def test_launcher_forwards_sigterm(sqlite_batch: tuple[Path, str, str]) -> None:
    batch, exp_id, uri = sqlite_batch
    _launcher_batch(batch, exit_code=0)
    (batch / "mlproject" / "entry.py").write_text(
        "import os, signal, sys, time\nfrom pathlib import Path\n"
        "from netrain.track.journal import JournalWriter\n"
        "w = JournalWriter(Path(os.environ['NETRAIN_JOURNAL']), Path.cwd())\n"
        "stop = []\nsignal.signal(signal.SIGTERM, lambda *a: stop.append(1))\n"
        "w.open_run('t', parent=None, name='t', experiment_id=os.environ['MLFLOW_EXPERIMENT_ID'],"
        " tags={})\n"
        "Path('started').write_text('')\n"
        "while not stop:\n    time.sleep(0.05)\n"
        "w.end_run('t', 'KILLED')\nw.close()\nsys.exit(143)\n")
    e = env()
    e["MLFLOW_TRACKING_URI"] = uri
    p = subprocess.Popen([*LAUNCHER, str(batch), "--experiment-id",
                          exp_id, "-P", "class=c", "-P", "architecture=a", "-P",
                          "trainingrun=2"], cwd=ROOT, env=e, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (batch / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)  # the launcher alone: it must pass it on
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    state = read_state(batch / "journal" / "c-a" / "2.jsonl")
    assert client(uri).get_run(state["runs"]["t"]).info.status == "KILLED"


def test_healing_waits_for_a_draining_follower(sqlite_batch: tuple[Path, str, str]) -> None:
    """A dead task's own follower may still hold its journal while heal writes the closing
    events: heal waits for the lock and ships them, so no run is left RUNNING."""
    from netrain.execute.heal import mark_died
    from netrain.execute.records import TaskRecord, record_path

    batch, exp_id, uri = sqlite_batch
    j = batch / "journal" / "c-a" / "0.jsonl"
    w = JournalWriter(j, batch)
    w.open_run("task-0", parent=None, name="c.a/0", experiment_id=exp_id, tags={})
    w.open_run("net-0-0", parent="task-0", name="net 0", experiment_id=exp_id, tags={})
    w.log_metrics("net-0-0", 0, {"loss": 1.0})
    w.close()
    ship(j, batch, uri)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time;"
         " fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX);"
         " print('held', flush=True); time.sleep(3)", str(j)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    rec = TaskRecord(model="c-a", index=0, key="task-0", journal=str(j.relative_to(batch)),
                     state="running")
    path = record_path(batch, "c-a", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    mark_died(batch, path, rec, "killed", uri, ship_within=30)
    holder.wait(10)
    statuses = {r.data.tags.get("netrain.key"): r.info.status
                for r in client(uri).search_runs([exp_id])}
    assert statuses == {f"{batch.name}:task-0": "KILLED", f"{batch.name}:net-0-0": "FAILED"}
    assert read_state(j)["offset"] == j.stat().st_size
