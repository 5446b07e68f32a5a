"""Per-network fixed cost of packed training: building each network under its own seed and
saving its files, in ms a network, against the sequential path's own build and save.

    .venv/bin/python bench/build_cost.py            # N = 64 and 256, MLP 6-8-1 and 32-64-64-1
    .venv/bin/python bench/build_cost.py --smoke    # tiny, to keep it working

``--gc`` also measures packed building with Python's collector left as it was.
Each case runs in a fresh process (imports and one warm-up build before the timer). Packed:
the trainer's ``members.Builder`` for each network (with its ``Seeder`` and ``YoungGC``):
the first network built in full with its initial values' recipe recorded, the second in
full and checked against the recipe, the others from the recipe, without a keras model;
then ``save_network`` for each, from the keras model that holds it (its own, or the
group's spare model, made once before the timer). Sequential: what
``sequential.train_one`` does around the training for each network (clear_session,
set_random_seed, the model, compile, build), then ``save_network``.
Goal (issue 19): packed build + save at most 10 ms a network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

GOAL_MS = 10.0


def case(kind: str, nets: int, mode: str) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(0)
    from packed import build, dataset  # bench/packed.py's models and data

    from netrain.define.contract import validate_output
    from netrain.train.group import PackedGroup
    from netrain.train.members import Builder, Seeder, YoungGC
    from netrain.train.sequential import NetworkJob, save_network

    data = dataset(kind, 1024)
    with tempfile.TemporaryDirectory() as tmp:
        def make_job(i: int) -> NetworkJob:
            out = {"name": f"{kind}{i}", "nb_epoch": 2, "wpath": f"{tmp}/w",
                   "archpath": f"{tmp}/a", "metricspath": f"{tmp}/m",
                   "model_generator": lambda: build(kind), "training_generator": data,
                   "evaluation_generator": None, "optimizer": "adam", "loss": "mse",
                   "batch_size": 32}
            return NetworkJob(i, "bench.build", validate_output(out, "bench.build"), 17 + i,
                              f"{kind}_n{i}", 0, False)

        jobs = [make_job(i) for i in range(nets + 1)]
        hist = {"loss": [1.0, 0.5]}
        if mode in ("packed", "packed-gc"):
            # the trainer's own builder: the first network of the model built in full (its
            # recipe recorded), the second in full and checked, the rest from the recipe
            young = YoungGC(every=8 if mode == "packed" else 1 << 30)
            warm = Builder(keras, Seeder())(nets, jobs[nets])
            save_network(warm.model, warm.job, hist, warm.arch_json)  # type: ignore[union-attr]
            start = time.perf_counter()
            builder = Builder(keras, Seeder())
            members = []
            for i in range(nets):
                members.append(builder(i, jobs[i]))
                young()
            young.done()
            built = time.perf_counter()
            group = PackedGroup(members, keras)  # type: ignore[arg-type]
            group.state.holding(members[-1])  # type: ignore[arg-type]  # its spare model, made once
            spare = time.perf_counter()
            for m in members:
                save_network(group.state.holding(m), m.job, hist, m.arch_json)  # type: ignore[union-attr]
            saved = time.perf_counter()
            replayed = sum(m.model is None for m in members)  # type: ignore[union-attr]
            return {"kind": kind, "nets": nets, "mode": mode, "replayed": replayed,
                    "build_ms": 1000 * (built - start) / nets,
                    "save_ms": 1000 * (saved - spare) / nets,
                    "spare_ms": 1000 * (spare - built)}
        else:
            def one(job: NetworkJob) -> Any:
                keras.backend.clear_session(free_memory=False)
                keras.utils.set_random_seed(job.seed)
                model = job.config.model_generator()
                model.compile(optimizer=job.config.optimizer, loss=job.config.loss)
                return model

            save_network(one(jobs[nets]), jobs[nets], hist)
            start = time.perf_counter()
            models = [one(jobs[i]) for i in range(nets)]
            built = time.perf_counter()
            for i, model in enumerate(models):
                save_network(model, jobs[i], hist)
            saved = time.perf_counter()
    return {"kind": kind, "nets": nets, "mode": mode,
            "build_ms": 1000 * (built - start) / nets, "save_ms": 1000 * (saved - built) / nets}


def run_case(kind: str, nets: int, mode: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, __file__, "--case", f"{kind},{nets},{mode}"],
                       capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"case {kind},{nets},{mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--nets", default="64,256")
    ap.add_argument("--models", default="mlp,wide")
    ap.add_argument("--gc", action="store_true", help="also packed with Python's collector "
                    "as it was (every automatic collection walking every member built)")
    args = ap.parse_args()
    if args.case:
        kind, nets, mode = args.case.split(",")
        print(json.dumps(case(kind, int(nets), mode)))
        return 0
    nets = [4] if args.smoke else [int(n) for n in args.nets.split(",")]
    print("| model | N | sequential build + save (ms/net) | packed build + save (ms/net) "
          "| ratio | goal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in args.models.split(","):
        for n in nets:
            seq = run_case(kind, n, "sequential")
            pk = run_case(kind, n, "packed")
            print(f"  {kind} N={n}: {pk['replayed']} of {n} built from the recipe; the "
                  f"group's spare model {pk['spare_ms']:.0f} ms once", flush=True)
            if args.gc:
                old = run_case(kind, n, "packed-gc")
                print(f"  {kind} N={n}: packed without _YoungGC {old['build_ms']:.1f} + "
                      f"{old['save_ms']:.1f} ms/net", flush=True)
            s_ms, p_ms = seq["build_ms"] + seq["save_ms"], pk["build_ms"] + pk["save_ms"]
            ok = "met" if p_ms <= GOAL_MS else "not met"
            print(f"| {kind} | {n} | {s_ms:.1f} ({seq['build_ms']:.1f} + {seq['save_ms']:.1f}) "
                  f"| {p_ms:.1f} ({pk['build_ms']:.1f} + {pk['save_ms']:.1f}) "
                  f"| {p_ms / s_ms:.2f} | <= {GOAL_MS:.0f} ms: {ok} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
