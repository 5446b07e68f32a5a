"""How long `netrain report` takes on a batch of 1,000 networks (synthetic records and metrics
CSVs of 50 epochs), against `netrain show` on the same batch in the same run.

    .venv/bin/python bench/report_scale.py [--networks 1000] [--epochs 50]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODELS = ("classifier.clu_one", "classifier.chransynth", "autoencoder.classical",
          "autoencoder.deep")


def cli(*args: str, cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "NETRAIN_CONFIG": ""}
    env.pop("NETRAIN_CONFIG")
    t = time.perf_counter()
    p = subprocess.run([str(BIN / "netrain"), *args], cwd=cwd, env=env, capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise SystemExit(f"netrain {' '.join(args)} failed: {p.stderr}")
    return time.perf_counter() - t, p


def fill(batch: Path, per_task: int, tasks: int, epochs: int) -> int:
    """Records and metrics CSVs as finished tasks would have left them."""
    rnd = random.Random(1)
    n = 0
    for model in MODELS:
        slug = model.replace(".", "-")
        scale = 2.3 if model.startswith("classifier") else 0.2
        for t in range(tasks):
            nets = {}
            for k in range(per_task):
                stem = f"{slug}_t{t}_n{k}"
                rate, floor = rnd.uniform(0.02, 0.15), rnd.uniform(0.1, 0.5)
                loss = [scale * (floor + (1 - floor) * math.exp(-rate * e)) for e in range(epochs)]
                val = [v * rnd.uniform(1.0, 1.15) for v in loss]
                with open(batch / "metrics" / f"{stem}.csv", "w") as fh:
                    fh.write("epoch,loss,val_loss\n")
                    fh.writelines(f"{e},{a},{b}\n"
                                  for e, (a, b) in enumerate(zip(loss, val, strict=True)))
                (batch / "weights" / f"{stem}.weights.h5").write_bytes(b"")
                nets[str(k)] = {"state": "finished", "run_id": f"{n:032x}", "name": slug,
                                "stem": stem, "epochs": epochs, "error": "",
                                "final": {"loss": loss[-1], "val_loss": val[-1]}}
                n += 1
            rec = {"model": model, "index": t, "state": "finished", "attempt": 1,
                   "started": "", "ended": "", "host": "bench", "pid": 0,
                   "executor": "local", "slurm_job_id": "", "log": "", "parent_run_id": "",
                   "error": "", "nets": nets, "retrain_of": ""}
            d = batch / "records" / slug
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{t}.json").write_text(json.dumps(rec))
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=50)
    a = ap.parse_args()
    tasks = 5
    per_task = max(1, a.networks // (len(MODELS) * tasks))
    with tempfile.TemporaryDirectory() as d:
        proj = Path(d) / "proj"
        cli("init", str(proj), cwd=Path(d))
        spec = ", ".join(f"{m}={per_task}" for m in MODELS)
        _, p = cli("generate", "--models", spec, "--array", str(tasks), "--nb-epoch",
                   str(a.epochs), "--no-check", cwd=proj)
        batch = Path(p.stdout.strip().splitlines()[-1])
        n = fill(batch, per_task, tasks, a.epochs)
        show, _ = cli("show", batch.name, "--no-scheduler", cwd=proj)
        files, _ = cli("report", batch.name, "--no-mlflow", cwd=proj)
        logged, _ = cli("report", batch.name, cwd=proj)
    out = {"networks": n, "epochs": a.epochs, "show_s": round(show, 2),
           "report_files_s": round(files, 2), "report_logged_s": round(logged, 2),
           "report_over_show": round(files / show, 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
