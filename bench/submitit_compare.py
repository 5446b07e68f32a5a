"""netrain against submitit on the same local SLURM cluster, and plain Keras in one process.

The same tiny networks (bench/project: Dense 8-16-1, 512 samples, 3 epochs) are trained:
- plain Keras looping in one process (no SLURM);
- one job looping over N networks: netrain `generate --run` of 1 task x N networks, and
  submitit's single job calling the same loop;
- an array of N one-network tasks: netrain N tasks x 1, submitit's map_array of N;
- N=32 with `--pack` against plain Keras and submitit's single looping job;
- N=32 with `--pack` run by `netrain run` (no SLURM) against plain Keras in one process, for
  both data forms: arrays, and generator functions (bench_models.batches: the original
  guide's form, 2048 samples an epoch) (`--only plain_gen,nr_run_gen,plain_big,nr_run`).
Wall time from submission to the last job's end (squeue empty), medians of --reps.

Usage: SLURM_CONF=... python bench/submitit_compare.py [--reps 2] [--nets 8]
Writes bench/sections/submitit.md (and prints it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, HERE, PROJECT, PY

EPOCHS = 3


def wait_queue_empty(timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
        if q.returncode == 0 and not q.stdout.strip():
            return
        time.sleep(0.25)
    raise RuntimeError("SLURM jobs did not finish")


def plain(n: int, gen: bool = False) -> float:
    t = time.perf_counter()
    subprocess.run([PY, str(PROJECT / "plain.py"), str(n), str(EPOCHS)] + (["gen"] if gen else []),
                   check=True, cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    return time.perf_counter() - t


def netrain_run(work: Path, nets: int, arch: str) -> float:
    """One packed task of ``nets`` networks run by ``netrain run`` on this machine (local
    executor, MLflow on SQLite): the time of ``netrain run``, generate's own work left out."""
    proj = work / f"nr-run-{arch}"
    proj.mkdir(parents=True, exist_ok=True)
    (proj / "netrain.yaml").write_text(
        f"trainings_dir: {proj / 'trainings'}\nmain_script: {PROJECT / 'main.py'}\n"
        "executor: local\ndisk: {check: 'off'}\n")
    samples = "2048" if arch == "tinygen" else "512"
    out = subprocess.run([str(BIN / "netrain"), "generate", "--models", f"bench.{arch}={nets}",
                          "--array", "1", "--nb-epoch", str(EPOCHS), "--epoch-samples",
                          samples, "--no-check", "--pack"],
                         cwd=proj, check=True, capture_output=True, text=True)
    batch = out.stdout.strip().splitlines()[-1]
    t = time.perf_counter()
    subprocess.run([str(BIN / "netrain"), "run", batch], cwd=proj, check=True,
                   capture_output=True)
    seconds = time.perf_counter() - t
    log = "\n".join(p.read_text() for p in (Path(batch) / "logs").glob("*.log"))
    if f"packed {nets} networks" not in log:
        raise RuntimeError(f"the task did not pack its {nets} networks:\n{log[-2000:]}")
    return seconds


def netrain(work: Path, array: int, nnets: int, pack: bool = False) -> float:
    proj = work / f"nr-{array}x{nnets}{'-pack' if pack else ''}"
    proj.mkdir(parents=True, exist_ok=True)
    (proj / "netrain.yaml").write_text(
        f"trainings_dir: {proj / 'trainings'}\nmain_script: {PROJECT / 'main.py'}\n"
        "executor: slurm\ndisk: {check: 'off'}\n")
    # the experiment and database exist before the clock starts (generate's own work)
    args = [str(BIN / "netrain"), "generate", "--models", f"bench.tiny={nnets}", "--array",
            str(array), "--nb-epoch", str(EPOCHS), "--epoch-samples", "512", "--no-check"]
    if pack:
        args.append("--pack")
    out = subprocess.run(args, cwd=proj, check=True, capture_output=True, text=True)
    batch = out.stdout.strip().splitlines()[-1]
    t = time.perf_counter()
    subprocess.run([str(BIN / "netrain"), "submit", batch], cwd=proj, check=True,
                   capture_output=True)
    wait_queue_empty()
    return time.perf_counter() - t


def _loop(n: int, epochs: int) -> None:
    sys.path.insert(0, str(PROJECT))
    from bench_models import plain_loop

    plain_loop(n, epochs)


def _one(i: int, epochs: int) -> None:
    sys.path.insert(0, str(PROJECT))
    from bench_models import plain_loop

    plain_loop(1, epochs, seed0=i)


def submitit_run(work: Path, n: int, array: bool) -> float:
    import submitit

    ex = submitit.AutoExecutor(folder=str(work / "submitit" / "%j"))
    ex.update_parameters(timeout_min=30, slurm_partition="debug", cpus_per_task=1)
    t = time.perf_counter()
    if array:
        jobs = ex.map_array(_one, list(range(n)), [EPOCHS] * n)
        [j.result() for j in jobs]
    else:
        ex.submit(_loop, n, EPOCHS).result()
    wait_queue_empty()
    return time.perf_counter() - t


def median(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    return statistics.median(fn() for _ in range(reps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--nets", type=int, default=8)
    ap.add_argument("--packed-nets", type=int, default=32)
    ap.add_argument("--only", help="comma-separated cases to run and print, no section "
                    "written (plain, nr_loop, sub_loop, nr_array, sub_array, plain_big, "
                    "nr_pack, sub_big, plain_gen, nr_run_gen, nr_run)")
    a = ap.parse_args()
    n, big = a.nets, a.packed_nets
    with tempfile.TemporaryDirectory(prefix="netrain-vs-submitit-") as d:
        work = Path(d)
        cases = {
            "plain": lambda: plain(n),
            "nr_loop": lambda: netrain(work, 1, n),
            "sub_loop": lambda: submitit_run(work, n, False),
            "nr_array": lambda: netrain(work, n, 1),
            "sub_array": lambda: submitit_run(work, n, True),
            "plain_big": lambda: plain(big),
            "nr_pack": lambda: netrain(work, 1, big, pack=True),
            "sub_big": lambda: submitit_run(work, big, False),
            "plain_gen": lambda: plain(big, gen=True),
            "nr_run_gen": lambda: netrain_run(work, big, "tinygen"),
            "nr_run": lambda: netrain_run(work, big, "tiny"),
        }
        if a.only:
            for name in a.only.split(","):
                runs = [cases[name]() for _ in range(a.reps)]
                print(f"{name}: median {statistics.median(runs):.1f} s of "
                      f"{', '.join(f'{t:.1f}' for t in runs)}", flush=True)
            return 0
        r = {name: median(fn, a.reps) for name, fn in cases.items()
             if name not in ("plain_gen", "nr_run_gen", "nr_run")}
    lines = [
        "## netrain against submitit on the same local SLURM",
        "",
        f"`bench/submitit_compare.py` on {time.strftime('%Y-%m-%d %H:%M')}, 2 cores, the "
        f"local SLURM cluster of the tests; tiny networks (Dense 8-16-1, 512 samples, "
        f"{EPOCHS} epochs); wall time from submission to the last job's end, median of "
        f"{a.reps}. netrain's tasks write their journal and MLflow (SQLite) gets it: a "
        "one-task batch ships from its launcher; the tasks of the array (all shorter than "
        "30 s) leave it to the batch's sync job, whose run is part of netrain's time. "
        "submitit's jobs track nothing.",
        "",
        "| layout | netrain | submitit | netrain / submitit | goal |",
        "|---|---|---|---|---|",
        f"| 1 job looping over {n} networks | {r['nr_loop']:.1f} s | {r['sub_loop']:.1f} s | "
        f"**{r['nr_loop'] / r['sub_loop']:.2f}** | <= 1.2 |",
        f"| an array of {n} one-network tasks | {r['nr_array']:.1f} s | {r['sub_array']:.1f} s "
        f"| **{r['nr_array'] / r['sub_array']:.2f}** | <= 1.2 |",
        f"| {big} networks: netrain 1 task `--pack`, submitit 1 job looping | "
        f"{r['nr_pack']:.1f} s | {r['sub_big']:.1f} s | **{r['nr_pack'] / r['sub_big']:.2f}** "
        "| |",
        "",
        f"Plain Keras in one process, no SLURM: {n} networks {r['plain']:.1f} s "
        f"(netrain's 1-task batch: **{r['nr_loop'] / r['plain']:.2f}x**); {big} networks "
        f"{r['plain_big']:.1f} s (netrain's packed task: **{r['nr_pack'] / r['plain_big']:.2f}"
        "x**, goal <= 0.25).",
        "",
    ]
    text = "\n".join(lines)
    (HERE / "sections" / "submitit.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
