"""16 concurrent shippers replay journals through `netrain server` on PostgreSQL: every run
and every metric point arrives, once. Needs NETRAIN_TEST_PG_URI (scripts/postgres.sh; CI
starts it and makes this test mandatory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netrain.track.journal import pending
from tests.integration.shipping import (
    ROOT,
    Server,
    TaskSpec,
    env,
    make_batch,
    project,
    verify,
    write_task,
)

SHIPPERS = 16


def pg_uri() -> str:
    uri = os.environ.get("NETRAIN_TEST_PG_URI", "")
    if not uri:
        how = ("no PostgreSQL test cluster: run eval \"$(bash scripts/postgres.sh start)\" "
               "(as root, scripts/run-tests.sh does it)")
        if os.environ.get("NETRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(how)
        pytest.skip(how)
    return uri


def test_sixteen_shippers_through_a_server_on_postgresql(tmp_path: Path) -> None:
    uri = pg_uri()
    proj = project(tmp_path)
    server = Server(proj, backend=uri).start(timeout=180)
    try:
        batch, exp_id = make_batch(proj / "trainings", server.url)
        specs = [TaskSpec(i, nets=2, epochs=6) for i in range(SHIPPERS)]
        journals = [write_task(batch, exp_id, s) for s in specs]
        procs = [subprocess.Popen([sys.executable, "-m", "netrain.track.shipper", "once", str(j),
                                   "--batch-dir", str(batch), "--uri", server.url],
                                  cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)
                 for j in journals]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
        assert pending(batch) == []
        got = verify(server.url, exp_id, batch, specs)
        assert got == {"runs": SHIPPERS * 3, "points": SHIPPERS * 2 * 2 * 6}
    finally:
        server.stop()


def test_later_tags_refused_with_create_run_are_sent_on_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's later tags go with its create_run; when PostgreSQL refuses one of them there
    (a key longer than its column), the run is created without them, the tags are refused
    on their own and recorded, and the run gets everything else."""
    from netrain.track.journal import JournalWriter, read_state
    from netrain.track.shipper import ship
    from tests.integration.shipping import client

    uri = pg_uri()
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF", "0.01")  # the refusal is retried a few times
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF_MAX", "0.01")
    batch, exp_id = make_batch(tmp_path, uri)
    j = batch / "journal" / "c-a" / "0.jsonl"
    with JournalWriter(j, batch) as w:
        w.open_run("n", parent=None, name="n", experiment_id=exp_id, tags={"a": "1"})
        w.log_params("n", {"lr": 0.1})
        w.log_metrics("n", 0, {"loss": 1.0})
        w.set_tags("n", {"k" * 300: "1", "b": "2"})
        w.end_run("n", "FINISHED")
    r = ship(j, batch, uri)
    assert r.complete and r.created == 1 and r.ended == 1
    state = read_state(j)
    assert [(e["key"], e["ev"]) for e in state["errors"]] == [("n", "tags")]
    run = client(uri).get_run(state["runs"]["n"])
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"loss": 1.0} and run.data.tags["a"] == "1"
    assert "k" * 300 not in run.data.tags
