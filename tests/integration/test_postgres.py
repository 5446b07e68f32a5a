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
