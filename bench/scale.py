"""Every phase of a packed study of tiny networks on one machine, at several sizes:
generate, `netrain run` (tracking down), `netrain sync` to a `netrain server`, show, show
BATCH, best, report, the batch's MLflow page in headless Chromium, and a plain MlflowClient
writing the same runs to an identical server, in the same run.

    .venv/bin/python bench/scale.py --sizes 1000,10000 [--md]

Each size is 2 models x (size / 200) tasks x 100 networks (`--pack`, 10 epochs, 64 samples
an epoch, the test fixture's configuration function: its callbacks factory gives no
callbacks, so its networks pack). The networks the task logs say were trained packed are
counted, so a silent fallback to one-by-one training shows in the table. Peak memory (max
RSS) of `sync` and `report` is read from wait4. Growth is the
time per network at the largest size over that at the smallest (1.0 = linear, below 1 =
better than linear).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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

PER_TASK = 100
CHROMIUM = "/usr/bin/chromium"


def _env() -> dict[str, str]:
    e = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    e["PYTHONPATH"] = f"{ROOT}{os.pathsep}{e.get('PYTHONPATH', '')}"
    e.pop("NETRAIN_CONFIG", None)
    return e


def timed(cmd: list[str], cwd: Path, check: bool = True) -> tuple[float, int, str]:
    """(seconds, max RSS in MiB, output) of one command."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if check and p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {out[-3000:]}")
    return wall, usage.ru_maxrss // 1024, out


def netrain(*args: str, cwd: Path, check: bool = True) -> tuple[float, int, str]:
    return timed([str(BIN / "netrain"), *args], cwd, check)


def chromium_page(url: str) -> tuple[float | None, int]:
    """Seconds to load and render the page headless, and the size of its DOM (bytes)."""
    if not Path(CHROMIUM).exists():
        return None, 0
    t = time.perf_counter()
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--virtual-time-budget=20000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t, len(p.stdout)


def packed_count(batch: Path) -> int:
    """How many networks the batch's task logs say were trained packed."""
    found = 0
    for log in (batch / "logs").glob("*.log"):
        for m in re.finditer(r"^netrain: packed (\d+) networks", log.read_text(), re.M):
            found += int(m.group(1))
    return found


def one_size(tmp: Path, networks: int) -> dict[str, Any]:
    from bench.sync_speed import PLAIN, plain_runs
    from tests.integration.shipping import Server

    tasks = max(1, networks // (2 * PER_TASK))
    root = tmp / f"n{networks}"
    proj = root / "proj"
    shutil.copytree(ROOT / "tests" / "fixtures" / "userproj", proj)
    (proj / "runs").mkdir()
    server = Server(proj)
    (proj / "netrain.yaml").write_text(
        "trainings_dir: runs\nmain_script: src/main.py\n"
        f"tracking_uri: {server.url}\nworkers: 2\n")
    row: dict[str, Any] = {"networks": 2 * tasks * PER_TASK, "tasks": 2 * tasks}
    server.start()
    row["generate"], _, out = netrain(
        "generate", "--models", f"regressor.wide={PER_TASK},narrow={PER_TASK}", "--array",
        str(tasks), "--nb-epoch", "10", "--epoch-samples", "64", "--pack", "--no-check",
        cwd=proj)
    batch = Path(out.strip().splitlines()[-1])
    server.stop()  # trained with tracking down, as the issue measured it
    row["run"], _, out = netrain("run", batch.name, "-j", "2", cwd=proj)
    row["run_tail"] = [x for x in out.splitlines() if "journal" in x][-1:]
    row["packed"] = packed_count(batch)
    server.start()
    try:
        row["sync"], row["sync_mib"], _ = netrain("sync", batch.name, cwd=proj)
        from mlflow.tracking import MlflowClient

        c = MlflowClient(tracking_uri=server.url)
        exp = c.get_experiment_by_name(batch.name)
        runs = c.search_runs([exp.experiment_id], max_results=50000)
        row["runs"] = len(runs)
        row["not_finished"] = sum(1 for r in runs if r.info.status != "FINISHED")
        row["show_all"], _, _ = netrain("show", cwd=proj)
        row["show"], _, _ = netrain("show", batch.name, cwd=proj)
        row["best"], _, _ = netrain("best", batch.name, "--top", "5", cwd=proj)
        row["report"], row["report_mib"], _ = netrain("report", batch.name, cwd=proj)
        row["ui"], row["ui_dom"] = chromium_page(
            f"{server.url}/#/experiments/{exp.experiment_id}")
    finally:
        server.stop()
    # the plain client: the same runs, written one call at a time, to an identical server
    twin_proj = root / "twin"
    twin_proj.mkdir()
    (twin_proj / "netrain.yaml").write_text("trainings_dir: runs\nmain_script: m.py\n")
    twin = Server(twin_proj).start()
    try:
        from mlflow.tracking import MlflowClient

        exp_id = MlflowClient(tracking_uri=twin.url).create_experiment(batch.name)
        spec = root / "plain.json"
        spec.write_text(json.dumps(plain_runs(batch)))
        row["plain"], _, _ = timed([sys.executable, "-c", PLAIN, twin.url, exp_id,
                                    str(batch), str(spec)], root)
    finally:
        twin.stop()
    row["ratio"] = row["sync"] / row["plain"]
    return row


PHASES = [("generate", "generate"), ("run", "netrain run -j 2 (tracking down)"),
          ("sync", "netrain sync (to netrain server, SQLite)"),
          ("plain", "plain MlflowClient, same runs, twin server"),
          ("show_all", "netrain show"), ("show", "netrain show BATCH"),
          ("best", "netrain best BATCH --top 5"), ("report", "netrain report BATCH"),
          ("ui", "batch page, headless Chromium")]


def render(rows: list[dict[str, Any]]) -> str:
    small, large = rows[0], rows[-1]
    head = " | ".join(f"{r['networks']:,} networks s" for r in rows)
    # (growth needs two sizes; with one it is left empty)
    lines = [
        "## Every phase of a packed study (bench/scale.py)",
        "",
        f"`python bench/scale.py` on {os.cpu_count()} cores, shared with other work (load "
        f"{os.getloadavg()[0]:.1f} at the end): 2 models x 100 networks a task, `--pack`, "
        "10 epochs. growth = time per network at the largest size over the smallest "
        "(1.0 linear, < 1 better than linear).",
        "",
        f"| phase | {head} | growth |",
        "| --- |" + " ---: |" * (len(rows) + 1),
    ]
    for key, label in PHASES:
        vals = [r.get(key) for r in rows]
        cells = " | ".join("n/a" if v is None else f"{v:.2f}" for v in vals)
        if len(rows) > 1 and small.get(key) and large.get(key):
            g = (large[key] / large["networks"]) / (small[key] / small["networks"])
            growth = f"{g:.2f}"
        else:
            growth = ""
        lines.append(f"| {label} | {cells} | {growth} |")
    lines.append("| sync / plain client | " + " | ".join(f"**{r['ratio']:.2f}**" for r in rows)
                 + " | |")
    lines.append("| peak RSS of sync, MiB | " + " | ".join(str(r["sync_mib"]) for r in rows)
                 + " | |")
    lines.append("| peak RSS of report, MiB | " + " | ".join(str(r["report_mib"])
                                                           for r in rows) + " | |")
    lines.append("| networks trained packed | " + " | ".join(f"{r['packed']:,}" for r in rows)
                 + " | |")
    lines.append("| runs in MLflow (not FINISHED) | " + " | ".join(
        f"{r['runs']} ({r['not_finished']})" for r in rows) + " | |")
    return "\n".join(lines) + "\n"




def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--md", action="store_true")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="netrain-bench-scale-") as d:
        for n in [int(x) for x in a.sizes.split(",")]:
            rows.append(one_size(Path(d), n))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = render(rows)
    print(table)
    if a.md:
        from bench.sections import write_section

        write_section("scale", table)


if __name__ == "__main__":
    main()
