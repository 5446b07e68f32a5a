"""Packed against sequential training: throughput ratio and peak memory, written to
BENCHMARKS.md's "Packed training" section.

    .venv/bin/python bench/packed.py              # N = 8, 32, 128 (a few minutes on 2 cores)
    .venv/bin/python bench/packed.py --smoke      # tiny, to keep it working
    .venv/bin/python bench/packed.py --no-md      # print only
    .venv/bin/python bench/packed.py --data generator --models mlp,wide  # one data form

The section is also kept in bench/sections/packed.md, which bench/run.py puts back when it rewrites
BENCHMARKS.md. Both sides are netrain's own trainers (``training.train_networks`` and
``packed.train_networks_packed``) called in-process with an observer that does nothing, so
the figures are training only: model building, compiling/tracing, the steps and saving each
network's files; no imports, no MLflow. Each case runs in a fresh process, whose peak RSS
above its RSS after the imports is the memory figure. The sequential time grows linearly
with N (each network is independent), so it is measured on ``--seq-nets`` networks, right
before each packed case, and scaled to N; the packed time is measured at every N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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

MODELS = {
    "mlp": "MLP 6-8-1",
    "wide": "MLP 32-64-64-1",
    "conv": "Conv1D 8x3, 8x3 on (32, 4)",
}


#: Measured by hand (see the text); kept in the section each time it is written.
GENERATORS = """\
Generator functions (issue 18; same run, then `--data generator --models mlp,wide --nets
32,128` again at 17:38 on a calmer machine, load ~2.5): MLP 6-8-1 31.6x / 21.2x at N = 32 /
128, then 20.9x / 36.1x; MLP 32-64-64-1 14.5x / 25.4x, then 14.1x / 22.3x: both goals met
(>= 12x, >= 18x). The sequential side is slower per network with a generator than with
arrays (keras wraps a generator in a tf.data pipeline), the packed side draws each
network's batch per step (128 networks x 192 steps: ~25,000 draws, about 0.5 s in all).
A network whose first batches drew from numpy's or Python's global random generator gets
its own state swapped in around each draw, which costs ~0.2 ms a draw (numpy's
get_state/set_state are ~85 us each): swapping for every network made MLP 6-8-1 at N=128
spend 13 of its 39 s (profiled) in the swap, so it is done only for networks whose first
draws used that state. Draws ahead in a thread (netrain/train/group.py, PREFETCH: the next
step's batches drawn while the current step runs, a queue of 2) bought nothing: at N=128
(17:41, load ~2) MLP 6-8-1 2.95 s with it, 2.77 s without; again (order reversed) 2.85 s
and 2.53 s; MLP 32-64-64-1 5.84 s and 6.04 s. Draws are ~0.5 s of a 2.5-6 s run and the
GIL leaves little to overlap on 2 cores, so PREFETCH is off (`--data generator-serial`
measures without it while it is on)."""

WHERE_TIME_GOES = """\
Where packed time goes (timed 2026-11-29 on a quiet machine, N=128): MLP 6-8-1 6.4 s in all,
building the 128 models under their own seeds 3.7 s (29 ms each), the vectorized training
(192 steps, tracing included) 1.0 s, saving their files 0.65 s (5 ms each: weights written
from a learnt layout, netrain/h5weights.py; keras' own save_weights took 27 ms); MLP
32-64-64-1 8.7 s in all, building 4.1 s (32 ms each), training 3.6 s, saving 0.5 s.
Building was 56 ms a network (MLP 6-8-1) until members were built with TensorFlow's eager
kernel cache kept: keras' clear_session and set_random_seed both clear it, and re-creating
every kernel after each clear cost half of each build (netrain/train/members.py, `Seeder`: the
full clear still runs for the first member and any repeated seed, where a stateful random
op could otherwise continue a stream). Building is per-network work the sequential path
does too, so the ratio is bounded by sequential's time per network over the build's.
Sequential's own time per network moved between 1.6 and 2.7 s across runs on this machine.
Earlier the same day (keras' own save_weights, the kernel cache cleared for each member):
MLP 6-8-1 8.2x / 12.7x / 17.9x at N = 8 / 32 / 128, then 8.0x / 18.9x / 20.4x (weights
from a learnt layout); MLP 32-64-64-1 7.4x / 12.1x / 13.4x, then 7.6x / 14.9x / 15.2x;
Conv1D 4.6x / 6.7x / 6.5x, then 5.9x / 7.7x / 8.0x.
Conv1D packs less well: TensorFlow's vectorization of a convolution whose filters
differ per network is slower per step than the dense case.
On Keras' jax backend (jax 0.10.2 on these 2 CPU cores; `bench/packed.py --backend jax`,
same day): MLP 6-8-1 8.2x / 23.6x at N = 32 / 128 (packed 3.9 s / 4.8 s), MLP 32-64-64-1
6.5x / 16.7x (5.0 s / 8.2 s), against jax's own sequential fit, which is twice as fast as
TensorFlow's here (0.9-1.1 s a network). Against TensorFlow's packed times (2.4 s / 6.0 s,
3.5 s / 11.4 s) jax is slower at N=32 and faster at N=128: no clear winner, so jax is no
extra of netrain's; its backend is supported for GPU nodes whose Keras runs on JAX. (Keras'
set_random_seed imports TensorFlow where it is installed, whatever the backend: ~5 s, paid
before the timer by both sides.)"""


def build(kind: str) -> Any:
    import keras

    if kind == "mlp":
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                                 keras.layers.Dense(1)])
    if kind == "wide":
        return keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(1)])
    return keras.Sequential([keras.Input((32, 4)), keras.layers.Conv1D(8, 3, activation="relu"),
                             keras.layers.Conv1D(8, 3), keras.layers.Flatten(),
                             keras.layers.Dense(1)])


def dataset(kind: str, n: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    shape = {"mlp": (6,), "wide": (32,), "conv": (32, 4)}[kind]
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = x.reshape(n, -1)[:, :3].sum(axis=1, keepdims=True).astype("float32")
    return x, y


def batches(x: Any, y: Any, seed: int) -> Any:
    """A generator function as the original guide's users write one: endless batches of 32,
    reshuffled each pass, from the network's own seeded generator."""
    import numpy as np

    def gen() -> Any:
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(x))
            for i in range(0, len(x), 32):
                yield x[order[i:i + 32]], y[order[i:i + 32]]

    return gen


class Quiet:
    def network_started(self, job: Any) -> None: ...
    def epoch_end(self, job: Any, epoch: int, logs: dict[str, float]) -> None: ...
    def network_finished(self, job: Any, result: Any) -> None: ...

    def network_failed(self, index: int, job: Any, exc: BaseException) -> None:
        raise RuntimeError(f"network {index} failed") from exc


def rss_kib() -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def peak_kib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def case(kind: str, nets: int, mode: str, samples: int, epochs: int,
         form: str = "arrays") -> dict[str, Any]:
    """One measurement, in this process (called in a fresh one by main)."""
    import keras

    # keras' set_random_seed imports tensorflow where it is installed, whatever the backend
    # (~5 s on jax): paid before the timer, as the import of keras is
    keras.utils.set_random_seed(0)

    from netrain.define.contract import validate_output
    from netrain.train import group
    from netrain.train.packed import train_networks_packed
    from netrain.train.sequential import NetworkJob, train_networks

    data = dataset(kind, samples)
    # generator: draws as netrain's default; generator-serial: never in a thread
    if form == "generator-serial":
        group.PREFETCH = False
    base = rss_kib()
    with tempfile.TemporaryDirectory() as tmp:
        def make_job(i: int) -> NetworkJob:
            train = data if form == "arrays" else batches(*data, seed=17 + i)
            out = {"name": f"{kind}{i}", "nb_epoch": epochs, "wpath": f"{tmp}/w",
                   "archpath": f"{tmp}/a", "metricspath": f"{tmp}/m",
                   "model_generator": lambda: build(kind), "training_generator": train,
                   "evaluation_generator": None, "optimizer": "adam", "loss": "mse",
                   "batch_size": 32}
            # a generator's epoch: epoch_samples rounded up to whole batches
            return NetworkJob(i, "bench.packed", validate_output(out, "bench.packed"), 17 + i,
                              f"{kind}_n{i}", 0 if form == "arrays" else samples, False)


        trainer = train_networks_packed if mode == "packed" else train_networks
        start = time.perf_counter()
        results = trainer(list(range(nets)), make_job, Quiet())
        seconds = time.perf_counter() - start
    assert all(r is not None for r in results)
    return {"kind": kind, "nets": nets, "mode": mode, "seconds": seconds, "form": form,
            "peak_mib": max(0, peak_kib() - base) / 1024,
            "steps": epochs * -(-samples // 32)}


def run_case(*args: Any, backend: str = "tensorflow") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--case", ",".join(str(a) for a in args)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "KERAS_BACKEND": backend})
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"bench case {args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "## Packed training",
        "",
        "`bench/packed.py`: netrain's sequential trainer against `--pack`'s trainer, in-process,",
        "training only (building, compiling or tracing, every step, saving each network's",
        "files; no imports, no MLflow). Adam, batch 32, "
        f"{meta['steps']} steps per network, same data. For each N, sequential is measured "
        f"on min(N, {meta['seq_nets']}) networks and scaled to N (networks are independent),",
        "right before packed at N (so both see the same load). Memory: the case process's",
        "peak RSS above its RSS after imports (sequential's does not grow with N).",
        f"Measured {meta['when']} on {meta['machine']}; {meta['note']}",
        "",
        "Data: `(x, y)` arrays, or a generator function per network (`batches` here: endless",
        "batches of 32 from its own seeded generator, as the original guide's users write",
        "them; an epoch is `epoch_samples` = the same sample count).",
        "",
        "| model | data | N | sequential (s) | packed (s) | speedup | peak MiB seq / packed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(f"| {MODELS[r['kind']]} | {r['form']} | {r['nets']} | {r['seq']:.1f} | "
                   f"{r['packed']:.2f} | "
                   f"{r['seq'] / r['packed']:.1f}x | {r['seq_mib']:.0f} / {r['packed_mib']:.0f} |")
    out += [
        "",
        "Goals (2 CPU cores, training only, the MLPs): arrays (issue 12) at least 15x at N=32",
        "and 20x at N=128; generator functions (issue 18) at least 12x at N=32 and 18x at",
        "N=128.",
        "",
        *GENERATORS.splitlines(),
        "",
        *WHERE_TIME_GOES.splitlines(),
        "",
    ]
    return "\n".join(out)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# netrain benchmarks\n"
    start = doc.find("## Packed training")
    if start >= 0:
        nxt = doc.find("\n## ", start + 3)
        doc = doc[:start] + text + (doc[nxt + 1:] if nxt >= 0 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-md", action="store_true")
    ap.add_argument("--nets", default="8,32,128")
    ap.add_argument("--seq-nets", type=int, default=8)
    ap.add_argument("--models", default="mlp,wide,conv")
    ap.add_argument("--data", default="arrays,generator",
                    help="data forms: arrays, generator (generator functions; not for conv), "
                    "generator-serial (the same, never drawn ahead in a thread)")
    ap.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax"],
                    help="Keras backend of both sides (jax: printed only, not written)")
    ap.add_argument("--note", default="the machine was shared with other work while measured.")
    args = ap.parse_args()
    if args.case:
        kind, nets, mode, samples, epochs, form = args.case.split(",")
        print(json.dumps(case(kind, int(nets), mode, int(samples), int(epochs), form)))
        return 0
    samples, epochs = (64, 2) if args.smoke else (1024, 6)
    nets = [2, 4] if args.smoke else [int(n) for n in args.nets.split(",")]
    seq_nets = 2 if args.smoke else args.seq_nets
    rows = []
    plan = [(form, kind) for form in args.data.split(",") for kind in args.models.split(",")
            if not (form.startswith("generator") and kind == "conv")]
    for form, kind in plan:
        for n in nets:
            # measured side by side, so both see the same load on a shared machine
            seq = run_case(kind, min(n, seq_nets), "sequential", samples, epochs, form,
                           backend=args.backend)
            per_net = seq["seconds"] / min(n, seq_nets)
            pk = run_case(kind, n, "packed", samples, epochs, form, backend=args.backend)
            row = {"kind": kind, "form": form, "nets": n, "seq": per_net * n,
                   "packed": pk["seconds"], "seq_mib": seq["peak_mib"],
                   "packed_mib": pk["peak_mib"]}
            rows.append(row)
            print(f"{kind} {form} N={n}: sequential {per_net:.3f} s per network, "
                  f"packed {pk['seconds']:.2f} s, "
                  f"{row['seq'] / row['packed']:.1f}x", flush=True)
    meta = {"steps": epochs * -(-samples // 32), "seq_nets": seq_nets,
            "when": time.strftime("%Y-%m-%d"), "note": args.note,
            "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}"}
    text = markdown(rows, meta)
    print(text)
    if not args.no_md and not args.smoke and args.backend == "tensorflow":
        write_section(text)
        (HERE / "sections" / "packed.md").write_text(text, encoding="utf-8")  # run.py keeps it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
