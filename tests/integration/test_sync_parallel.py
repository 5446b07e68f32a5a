"""Journals shipped several at a time to a real `netrain server`: a server stopped and
started again mid-way loses and duplicates nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from netrain.track.sync import SyncResult, sync_batch
from tests.integration.shipping import Server, TaskSpec, make_batch, project, verify, write_task


def test_eight_journals_at_once_through_a_server_restart(tmp_path: Path,
                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF", "0.2")
    monkeypatch.setenv("NETRAIN_SHIP_BACKOFF_MAX", "1")
    proj = project(tmp_path)
    server = Server(proj).start()
    try:
        batch, exp_id = make_batch(proj / "trainings", server.url)
        specs = [TaskSpec(i, nets=5, epochs=2) for i in range(8)]
        for spec in specs:
            write_task(batch, exp_id, spec)
        lines: list[str] = []
        out: list[SyncResult] = []
        threads = set()

        def say(text: str) -> None:
            threads.add(threading.current_thread().name)
            lines.append(text)

        t = threading.Thread(target=lambda: out.append(
            sync_batch(batch, server.url, say, retry_for=120, jobs=8)))
        t.start()
        # stop it while the eight shippers are at work (each has 6 runs to create): a
        # state file is written as a shipper starts its first chunk
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                p.name.endswith(".shipped.json") for p in (batch / "journal").rglob("*")):
            time.sleep(0.01)
        time.sleep(0.2)
        server.stop()
        time.sleep(2)
        server.start()
        t.join(180)
        assert not t.is_alive()
        assert out and out[0].shipped == 8 and not out[0].incomplete, lines
        # the outage hit shippers mid-way, and they were shipping at once
        assert any("retrying" in x for x in lines), lines
        assert len(threads) > 1, threads
        verify(server.url, exp_id, batch, specs)
    finally:
        server.stop()

