"""A task's start-up and one task of N networks end to end, against plain Keras, with the
journal (the training process imports no MLflow; the launcher ships beside it).

Usage: python bench/startup.py [--reps 3] [--nets 8]   (writes bench/sections/startup.md)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nets", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="netrain-startup-") as d:
        work = Path(d)
        pt = bench.bench_per_task(work, a.reps)
        e2e = bench.bench_end_to_end(work, a.nets, a.nets, a.nets, 3, a.reps,
                                     ("mlflow", "direct"))
    lines = [
        "## Start-up and one task end to end, with the journal",
        "",
        f"`bench/startup.py` on {time.strftime('%Y-%m-%d %H:%M')}, 2 cores, medians of "
        f"{a.reps}. The training process writes a local journal and imports no MLflow; the "
        "default launcher ships the journal beside it (SQLite tracking).",
        "",
        "| measure | plain Keras | `launcher: mlflow` (default) | `launcher: direct` | goal |",
        "|---|---|---|---|---|",
        f"| process start to the first training step | {pt['plain_keras_first_step_s']:.2f} s "
        f"| {pt['netrain_mlflow_s']:.2f} s (**{pt['ratio_mlflow']:.2f}**) | "
        f"{pt['netrain_direct_s']:.2f} s (**{pt['ratio_direct']:.2f}**) | |",
        f"| one task of {a.nets} tiny networks, `netrain run` | {e2e['plain_single_s']:.1f} s "
        f"| {e2e['mlflow_single_task_s']:.1f} s (**{e2e['mlflow_single_task_ratio']:.2f}**) | "
        f"{e2e['direct_single_task_s']:.1f} s (**{e2e['direct_single_task_ratio']:.2f}**) "
        "| <= 1.15 |",
        "",
        f"Before the journal (BENCHMARKS above, same machine): start to first step 1.63 "
        f"(default) and 1.48 (direct); one task of 8 networks 1.48 and 1.41. "
        f"`mlflow run` CLI launcher now: {pt['netrain_mlflow-cli_s']:.2f} s to the first step "
        f"(**{pt['ratio_mlflow_cli']:.2f}**).",
        "",
    ]
    text = "\n".join(lines)
    (HERE / "sections" / "startup.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
