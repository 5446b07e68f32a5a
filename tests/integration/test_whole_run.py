"""A finished run in one request to `netrain server` (its whole-run route): the runs are
those that call-by-call shipping makes on a plain `mlflow server`, in one request a network;
the route needs a login and the right to create runs in the experiment; a request whose
answer was lost leaves one run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from netrain.track.server import free_port, wait_healthy
from netrain.track.sync import sync_batch
from tests.integration.shipping import (
    Server,
    TaskSpec,
    env,
    make_batch,
    net_key,
    project,
    verify,
    write_task,
)

ROUTE = "/netrain-api/1/whole-run"


def requests_in(log: Path) -> Counter[tuple[str, str, int]]:
    """(method, path, status) of the requests in a uvicorn access log."""
    out: Counter[tuple[str, str, int]] = Counter()
    for m in re.finditer(r'"(GET|POST|PUT|PATCH|DELETE) ([^ ?"]+)[^"]*" (\d{3})',
                         log.read_text()):
        out[(m[1], m[2], int(m[3]))] += 1
    return out


def plain_mlflow_server(root: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`mlflow server` as a lab runs it: no netrain route."""
    port = free_port()
    log = root / "plain-server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{root}/plain.db", "--artifacts-destination", str(root / "plain-art"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env(), stdout=err, stderr=err, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    assert wait_healthy(url, proc, 120), log.read_text()[-2000:]
    return proc, url, log


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ship(batch: Path, uri: str) -> None:
    lines: list[str] = []
    result = sync_batch(batch, uri, lines.append, retry_for=60, jobs=4)
    assert not result.incomplete and not result.busy and not result.not_tried, lines


def test_whole_runs_are_the_runs_call_by_call_shipping_makes(tmp_path: Path) -> None:
    specs = [TaskSpec(0, nets=4, epochs=3), TaskSpec(1, nets=3, epochs=2)]
    proj = project(tmp_path)
    server = Server(proj).start()
    plain, plain_url, plain_log = plain_mlflow_server(tmp_path)
    try:
        seen = {}
        for name, url in (("netrain", server.url), ("plain", plain_url)):
            batch, exp_id = make_batch(proj / "trainings" / name, url)
            for spec in specs:
                write_task(batch, exp_id, spec)
            ship(batch, url)
            verify(url, exp_id, batch, specs)  # each run once, FINISHED, its data and file
            from netrain.track.journal import journals, read_events
            from tests.integration.shipping import client

            times: dict[tuple[str, str], int] = {}  # (key, "start"/"end"/step) -> time
            for j in journals(batch):
                for _, ev in read_events(j, 0):
                    what = {"run": "start", "end": "end"}.get(ev["ev"])
                    what = what or (str(ev["step"]) if ev["ev"] == "metrics" else None)
                    if what:
                        times[(ev["key"], what)] = ev["t"]
            c = client(url)
            runs = c.search_runs([exp_id], max_results=100)
            seen[name] = {}
            for r in runs:
                key = r.data.tags["netrain.key"].split(":", 1)[1]
                history = c.get_metric_history(r.info.run_id, "loss")
                # the times are the journal's: when trained, not when shipped
                assert (r.info.start_time, r.info.end_time) == \
                    (times[(key, "start")], times[(key, "end")])
                assert all(m.timestamp == times[(key, str(m.step))] for m in history)
                seen[name][key] = (
                    r.info.run_name, r.data.params,
                    {k: v for k, v in r.data.tags.items()
                     if k not in ("mlflow.parentRunId", "netrain.key", "mlflow.user")},
                    [(m.step, m.value) for m in history])
        # the same runs, names, params, tags and metric points on both servers
        assert seen["netrain"] == seen["plain"] and len(seen["plain"]) == 9
        nets = sum(s.nets for s in specs)
        got = requests_in(proj / f"server-{server.port}.log")
        assert got[("POST", ROUTE, 200)] == len(specs)  # a task's networks: one request
        assert got[("POST", "/api/2.0/mlflow/runs/create", 200)] == len(specs)  # the tasks
        assert got[("POST", "/api/2.0/mlflow/runs/log-batch", 200)] == len(specs)
        # a plain mlflow server: asked by the lanes that started before its first answer
        # (2 journals x 4 lanes at most), then call by call
        got = requests_in(plain_log)
        assert 1 <= got[("POST", ROUTE, 404)] <= 8
        assert got[("POST", "/api/2.0/mlflow/runs/create", 200)] == len(specs) + nets
    finally:
        server.stop()
        stop(plain)


USER, PASSWORD = "netrain-admin", "Zq7-not-in-any-file-4711"


def test_the_route_needs_a_login_and_the_right_to_create_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    proj = project(tmp_path)
    port = free_port()
    e = {**env(), "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    log = proj / "server.log"
    with open(log, "w") as err:
        srv = subprocess.Popen([str(Path(sys.executable).parent / "netrain"), "server",
                                "--port", str(port), "--auth"], cwd=proj, env=e,
                               stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    admin = (USER, PASSWORD)
    bob = ("bob", "bob-has-a-long-password")
    try:
        assert srv.stdout is not None and srv.stdout.readline(), log.read_text()[-2000:]
        api = f"{url}/api/2.0/mlflow"
        r = requests.post(f"{api}/users/create", auth=admin,
                          json={"username": bob[0], "password": bob[1]}, timeout=30)
        assert r.status_code == 200, r.text
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        batch, exp_id = make_batch(proj / "trainings", url)  # the admin's experiment
        spec = TaskSpec(0, nets=2, epochs=2)
        write_task(batch, exp_id, spec)

        def post(who: tuple[str, str] | None) -> requests.Response:
            return requests.post(f"{url}{ROUTE}", params={"experiment_id": exp_id},
                                 data={"runs": '[{"name": "x", "status": "FINISHED"}]'},
                                 files=[("0:weights", ("w.h5", b"w"))], auth=who, timeout=30)

        assert post(None).status_code == 401
        assert post(bob).status_code == 403  # may read the experiment, not create runs
        runs = requests.post(f"{api}/runs/search", auth=admin,
                             json={"experiment_ids": [exp_id]}, timeout=30).json()
        assert runs.get("runs", []) == []  # refused before anything was written

        # bob ships: refused whole and call by call, recorded, nothing created
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", bob[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", bob[1])
        lines: list[str] = []
        sync_batch(batch, url, lines.append, retry_for=20, jobs=2)
        assert "refused" in " ".join(lines), lines
        runs = requests.post(f"{api}/runs/search", auth=admin,
                             json={"experiment_ids": [exp_id]}, timeout=30).json()
        assert runs.get("runs", []) == []

        # once he may edit the experiment, his whole-run request creates the run
        r = requests.post(f"{url}/api/3.0/mlflow/users/permissions/grant", auth=admin,
                          json={"username": bob[0], "resource_type": "experiment",
                                "resource_id": exp_id, "permission": "EDIT"}, timeout=30)
        assert r.status_code == 200, r.text
        answer = post(bob)
        assert answer.status_code == 200, answer.text
        run = requests.get(f"{api}/runs/get", auth=admin,
                           params={"run_id": answer.json()["run_ids"][0]},
                           timeout=30).json()
        assert run["run"]["info"]["status"] == "FINISHED"
        # a folder that would leave the run's artifacts is refused
        bad = requests.post(f"{url}{ROUTE}", params={"experiment_id": exp_id},
                            data={"runs": "[{}]"}, files=[("0:../../x", ("w.h5", b"w"))],
                            auth=bob, timeout=30)
        assert bad.status_code == 400 and "leaves the run's artifacts" in bad.text
        assert not list(proj.rglob("x/w.h5"))
    finally:
        stop(srv)


def test_a_whole_run_whose_answer_was_lost_is_kept_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first whole-run request "times out" on the client and the server carries it out
    later anyway, after its runs were shipped call by call: the second runs are deleted."""
    from netrain.track import mlflow_ship

    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF", "0.05")
    proj = project(tmp_path)
    server = Server(proj).start()
    try:
        batch, exp_id = make_batch(proj / "trainings", server.url)
        spec = TaskSpec(0, nets=3, epochs=2)
        j = write_task(batch, exp_id, spec)
        real = mlflow_ship.whole_runs
        late: list[threading.Thread] = []

        def lost(c: Any, *args: Any) -> Any:
            if not late:
                late.append(threading.Timer(1.0, real, (c, *args)))
                late[0].start()
                raise TimeoutError("read timed out")
            return real(c, *args)

        monkeypatch.setattr(mlflow_ship, "whole_runs", lost)
        ship(batch, server.url)
        late[0].join()
        from netrain.track.journal import read_state

        nets = [net_key(0, n) for n in range(spec.nets)]
        assert sorted(read_state(j)["uncertain"]) == nets  # the task's networks, one request
        from tests.integration.shipping import client

        c = client(server.url)
        for n in nets:
            key = f"{batch.name}:{n}"
            assert len(c.search_runs([exp_id], f"tags.`netrain.key` = '{key}'")) == 2
        lines: list[str] = []
        sync_batch(batch, server.url, lines.append, retry_for=60, jobs=2)
        verify(server.url, exp_id, batch, [spec])  # one run a key, with its data
        for n in nets:
            key = f"{batch.name}:{n}"
            assert [r.info.run_id for r in c.search_runs(
                [exp_id], f"tags.`netrain.key` = '{key}'")] == [read_state(j)["runs"][n]]
    finally:
        server.stop()


def test_a_run_refused_mid_request_goes_call_by_call_and_the_rest_arrive(
        tmp_path: Path) -> None:
    """The second of three networks has a param MLflow refuses: the server answers the
    first run's id and the error; the refused param is recorded, the rest is shipped, each
    run once."""
    from netrain.track.journal import JournalWriter, journal_path, read_state
    from tests.integration.shipping import client

    proj = project(tmp_path)
    server = Server(proj).start()
    try:
        batch, exp_id = make_batch(proj / "trainings", server.url)
        j = journal_path(batch, "c-a", 0)
        w = JournalWriter(j, batch)
        w.open_run("t", parent=None, name="t", experiment_id=exp_id, tags={})
        for n in range(3):
            k = f"t/{n}"
            w.open_run(k, parent="t", name=k, experiment_id=exp_id, tags={"n": n})
            w.log_params(k, {"lr": 0.1, **({"bad*key": 1} if n == 1 else {})})
            w.log_metrics(k, 0, {"loss": 1.0 + n})
            f = batch / "weights" / f"{n}.h5"
            f.write_bytes(b"w")
            w.log_artifacts(k, {"weights": f})
            w.end_run(k, "FINISHED")
        w.end_run("t", "FINISHED")
        w.close()
        lines: list[str] = []
        sync_batch(batch, server.url, lines.append, retry_for=30, jobs=2)
        state = read_state(j)
        assert [e["key"] for e in state["errors"]] == ["t/1"]
        assert "bad*key" in state["errors"][0]["error"]
        c = client(server.url)
        runs = {r.data.tags["netrain.key"].split(":", 1)[1]: r
                for r in c.search_runs([exp_id], max_results=10)}
        assert sorted(runs) == ["t", "t/0", "t/1", "t/2"]  # each once
        for n in range(3):
            r = runs[f"t/{n}"]
            assert r.info.status == "FINISHED" and r.data.metrics == {"loss": 1.0 + n}
            assert r.data.params == {"lr": "0.1"}
            assert [a.path for a in c.list_artifacts(r.info.run_id, "weights")] == \
                [f"weights/{n}.h5"]
        got = requests_in(proj / f"server-{server.port}.log")
        assert got[("POST", ROUTE, 200)] == 1
    finally:
        server.stop()


def test_a_journal_tried_while_tracking_was_down_goes_whole_later(tmp_path: Path) -> None:
    """`netrain run` with tracking down tries a journal, and nothing reaches the server: its
    chunk is not left "in flight", so the next sync sends its networks whole."""
    from netrain.track.journal import read_state

    proj = project(tmp_path)
    server = Server(proj).start()
    try:
        batch, exp_id = make_batch(proj / "trainings", server.url)
        server.stop()
        spec = TaskSpec(0, nets=3, epochs=2)
        j = write_task(batch, exp_id, spec)
        lines: list[str] = []
        result = sync_batch(batch, server.url, lines.append, retry_for=1, jobs=1)
        assert result.incomplete, lines  # tracking down: left for later
        state = read_state(j)
        assert state["offset"] == 0 and "inflight" not in state, state
        server.start()
        ship(batch, server.url)
        verify(server.url, exp_id, batch, [spec])
        got = requests_in(proj / f"server-{server.port}.log")
        assert got[("POST", ROUTE, 200)] == 1  # the task's 3 networks, whole
        assert got[("POST", "/api/2.0/mlflow/runs/create", 200)] == 1  # the task's run
    finally:
        server.stop()


def test_odd_metric_values_arrive_as_log_batch_stores_them(tmp_path: Path) -> None:
    """NaN, infinities, a point logged twice, steps out of order: the whole-run route
    stores the same points and the same latest values as log_batch on a plain server."""
    from netrain.track.journal import JournalWriter, journal_path
    from tests.integration.shipping import client

    proj = project(tmp_path)
    server = Server(proj).start()
    plain, plain_url, _ = plain_mlflow_server(tmp_path)
    # the latest value is step 5's (0.75), not the last one logged; NaN and infinities are
    # stored as MLflow stores them (0 with is_nan, the largest floats)
    values = [(0, float("nan")), (5, 0.75), (1, float("inf")), (2, float("-inf")), (3, 0.5),
              (3, 0.5), (1, 0.25), (4, float("nan"))]
    try:
        seen = {}
        for name, url in (("netrain", server.url), ("plain", plain_url)):
            batch, exp_id = make_batch(proj / "trainings" / name, url)
            w = JournalWriter(journal_path(batch, "c-a", 0), batch)
            w.open_run("t", parent=None, name="t", experiment_id=exp_id, tags={})
            for n in range(2):
                w.open_run(f"t/{n}", parent="t", name=f"n{n}", experiment_id=exp_id, tags={})
                w.log_params(f"t/{n}", {"lr": 0.1, "n": n})
                for step, v in values:
                    w.log_metrics(f"t/{n}", step, {"loss": v, "acc": -v})
                w.end_run(f"t/{n}", "FINISHED")
            w.end_run("t", "FINISHED")
            w.close()
            ship(batch, url)
            c = client(url)
            seen[name] = {
                r.info.run_name: (
                    r.info.status, r.data.params, repr(sorted(r.data.metrics.items())),
                    repr(sorted((m.step, m.value) for m in
                                c.get_metric_history(r.info.run_id, "loss"))))
                for r in c.search_runs([exp_id])}
        assert seen["netrain"] == seen["plain"] and len(seen["plain"]) == 3
        assert requests_in(proj / f"server-{server.port}.log")[("POST", ROUTE, 200)] == 1
    finally:
        server.stop()
        stop(plain)
