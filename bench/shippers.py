"""Concurrent shippers against each tracking backend: runs/s, metric points/s, errors.

    .venv/bin/python bench/shippers.py                 # 8, 32, 64 shippers (~5 min, 2 cores)
    .venv/bin/python bench/shippers.py --sizes 8 --md  # quick; --md rewrites the section

N journals (one per task: 1 task run + 2 network runs, 20 epochs x 2 metrics each, plus
their artifacts) are written first, then N shipper processes replay them at once into:
SQLite directly, `netrain server` on SQLite, and `netrain server` on PostgreSQL (a private
cluster from scripts/postgres.sh, or $NETRAIN_TEST_PG_URI). MLflow is imported once and the
shippers are forked from that process, each with its own client (connection), so the clock
measures the backend, not N interpreters importing MLflow. The clock starts when every
shipper has opened its store and stops when the last one is done; then the runs are counted
in MLflow.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

NETS = 2
EPOCHS = 20


def _worker(journal: str, batch: str, uri: str, ready: Any, start: Any, out: Any) -> None:
    from netrain.track.shipper import Shipper

    retried = []
    try:
        s = Shipper(Path(journal), Path(batch), uri, give_up_after=120,
                    log=lambda text: retried.append(text))
        _ = s.client  # open the store before the clock starts
        ready.release()
        start.wait()
        r = s.ship_all()
        bad = len(r.errors) + (0 if r.complete else 1)
        out.put((r.created, r.metric_points, bad, bool(retried), time.time(),
                 "; ".join(r.errors[:1])[:300]))
    except Exception as exc:
        ready.release()
        out.put((0, 0, 1, bool(retried), time.time(), repr(exc)[:200]))


def run_case(root: Path, uri: str, n: int) -> dict[str, Any]:
    from tests.integration.shipping import TaskSpec, make_batch, write_task

    batch, exp_id = make_batch(root, uri)
    journals = [write_task(batch, exp_id, TaskSpec(i, nets=NETS, epochs=EPOCHS))
                for i in range(n)]
    ctx = mp.get_context("fork")
    ready, start, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(j), str(batch), uri, ready, start, out))
             for j in journals]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire(timeout=300)
    t0 = time.time()
    start.set()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[4] for r in results) - t0
    from netrain.track.mlflow_ship import client

    found = len(client(uri).search_runs([exp_id], max_results=10000))
    runs = sum(r[0] for r in results)
    points = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    msgs = sorted({r[5] for r in results if r[5]})
    return {"n": n, "wall": wall, "runs": runs, "points": points, "errors": errors,
            "retried": sum(1 for r in results if r[3]), "missing": n * (1 + NETS) - found,
            "runs_s": runs / wall if wall else 0.0, "points_s": points / wall if wall else 0.0,
            "messages": msgs}


class _Server:
    def __init__(self, root: Path, backend: str) -> None:
        from netrain.track.server import free_port

        self.root = root
        (root / "trainings").mkdir(parents=True, exist_ok=True)
        (root / "netrain.yaml").write_text("trainings_dir: trainings\nmain_script: m.py\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(root / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([str(BIN / "netrain"), "server", "--port", str(self.port),
                                      "--backend-store-uri", backend], cwd=root, env=env,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        log = (root / "server.log").read_text()
        if line != f"tracking_uri: {self.url}":
            raise RuntimeError(f"netrain server did not start: {log[-500:]}")
        ready = [x for x in log.splitlines() if x.startswith("netrain: mlflow server ready")]
        self.ready = ready[-1].split("ready in ", 1)[1].split(";")[0] if ready else "?"

    def stop(self) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def _postgres() -> tuple[str | None, bool]:
    uri = os.environ.get("NETRAIN_TEST_PG_URI")
    if uri:
        return uri, False
    env = dict(os.environ, NETRAIN_PG_DIR=str(Path(tempfile.gettempdir()) / "netrain-pg-bench"))
    p = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "start"], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"bench: no PostgreSQL ({p.stderr.strip()}): its rows are left out",
              file=sys.stderr)
        return None, False
    return p.stdout.strip().split("=", 1)[1], True


def _stop_postgres() -> None:
    env = dict(os.environ, NETRAIN_PG_DIR=str(Path(tempfile.gettempdir()) / "netrain-pg-bench"))
    subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop"], env=env,
                   capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,32,64")
    ap.add_argument("--backends", default="sqlite,server-sqlite,server-pg",
                    help="some of sqlite, server-sqlite, server-pg")
    ap.add_argument("--md", action="store_true", help="rewrite the section in BENCHMARKS.md")
    a = ap.parse_args()
    backends = set(a.backends.split(","))
    sizes = [int(x) for x in a.sizes.split(",")]
    import mlflow  # noqa: F401  (imported once; the shippers are forked from here)
    import sqlalchemy  # noqa: F401

    from netrain.track import shipper  # noqa: F401

    rows: list[tuple[str, dict[str, Any]]] = []
    starts: dict[str, str] = {}
    pg, started_pg = _postgres() if "server-pg" in backends else (None, False)
    try:
        with tempfile.TemporaryDirectory(prefix="netrain-bench-ship-") as tmp:
            for n in sizes:
                if "sqlite" in backends:
                    root = Path(tmp) / f"sqlite-{n}"
                    root.mkdir()
                    rows.append(("SQLite file, direct",
                                 run_case(root, f"sqlite:///{root}/m.db", n)))
                    print(rows[-1], file=sys.stderr)
                if "server-sqlite" in backends:
                    root = Path(tmp) / f"srv-sqlite-{n}"
                    root.mkdir()
                    srv = _Server(root, f"sqlite:///{root}/trainings/mlflow.db")
                    starts.setdefault("SQLite", srv.ready)
                    try:
                        rows.append(("server on SQLite",
                                     run_case(root / "trainings", srv.url, n)))
                    finally:
                        srv.stop()
                    print(rows[-1], file=sys.stderr)
                if pg:
                    root = Path(tmp) / f"srv-pg-{n}"
                    root.mkdir()
                    srv = _Server(root, pg)
                    starts["PostgreSQL"] = srv.ready
                    try:
                        rows.append(("server on PostgreSQL",
                                     run_case(root / "trainings", srv.url, n)))
                    finally:
                        srv.stop()
                    print(rows[-1], file=sys.stderr)
    finally:
        if started_pg:
            _stop_postgres()
    table = render(rows, starts)
    print(table)
    if a.md:
        from bench.sections import write_section

        write_section("shippers", table)


def render(rows: list[tuple[str, dict[str, Any]]], starts: dict[str, str]) -> str:
    lines = [
        "## Concurrent shippers per tracking backend",
        "",
        f"`python bench/shippers.py` on {os.cpu_count()} cores: N shipper processes replay N "
        f"task journals at once (1 task run + {NETS} network runs each, {EPOCHS} epochs x 2 "
        "metrics per network, artifacts included). The server is `netrain server` (1 worker). "
        "errors = shippers that did not ship everything; retried = shippers that met a "
        "transient error (and retried it); missing = runs not found in MLflow afterwards.",
        "",
        "| backend | shippers | wall s | runs/s | metric points/s | errors | retried | missing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['n']} | {r['wall']:.1f} | {r['runs_s']:.1f} | "
                     f"{r['points_s']:.0f} | {r['errors']} | {r['retried']} | {r['missing']} |")
    if starts:
        lines += ["", "`netrain server` start-up to /health (and RSS of all its processes): " +
                  ", ".join(f"on {k} {v}" for k, v in starts.items()) + "."]
    msgs = sorted({m for _, r in rows for m in r["messages"]})
    if msgs:
        lines += ["", "Errors seen: " + "; ".join(msgs)]
    return "\n".join(lines) + "\n"




if __name__ == "__main__":
    main()
