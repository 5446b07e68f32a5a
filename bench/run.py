"""netrain benchmarks: what the harness costs, as ratios against plain Keras in the same run.

    .venv/bin/python bench/run.py            # full suite (~10 min on 2 cores)
    .venv/bin/python bench/run.py --smoke    # tiny sizes, to keep the suite working (CI)

Writes BENCHMARKS.md (tables; --md) and bench/results.json (--json). Every figure is the
median of --reps repetitions, and every ratio is against a baseline measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROJECT = HERE / "project"
PY = sys.executable
BIN = Path(PY).parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(ROOT))


def median_time(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_project(root: Path, launcher: str) -> Path:
    """A netrain project around bench/project, with its own trainings dir and database."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "netrain.yaml").write_text(
        f"trainings_dir: {root / 'trainings'}\n"
        f"main_script: {PROJECT / 'main.py'}\n"
        f"launcher: {launcher}\n"
        "workers: 2\n"
        "disk: {check: 'off'}\n"
    )
    return root / "netrain.yaml"


def new_batch(cfg_path: Path, models: list[tuple[str, str, int]], array: int, epochs: int,
              epoch_samples: int) -> Path:
    from netrain.define.builder import TrainOptions, generate
    from netrain.define.config import load_config
    from netrain.define.spec import ModelSpec

    cfg = load_config(cfg_path)
    path, _ = generate(cfg, [ModelSpec(c, a, n) for c, a, n in models],
                       TrainOptions(array, epochs, epoch_samples, False), description="bench",
                       gpu=False, check=False, say=lambda s: None)
    return path


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall time of a real `netrain` command."""
    t = time.perf_counter()
    p = subprocess.run([str(BIN / "netrain"), *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"netrain {' '.join(args)} failed: {p.stderr[-2000:]}")
    return dt


def plain_process(n: int, epochs: int) -> float:
    """Wall time of plain Keras training n networks in a fresh process (start-up included)."""
    t = time.perf_counter()
    subprocess.run([PY, str(PROJECT / "plain.py"), str(n), str(epochs)], check=True,
                   cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    return time.perf_counter() - t


# ------------------------------------------------------------------------------ sections

def bench_per_network(work: Path, n: int, epochs: int, reps: int) -> dict[str, Any]:
    """N networks through netrain's training path vs plain model.fit, same process."""
    import bench_models

    from netrain.train.task import TaskArgs, TaskObserver, TaskRunner

    cfg = make_project(work / "pernet", "direct")
    batch = new_batch(cfg, [("bench", "tiny", n)], 2 * reps + 2, epochs, bench_models.SAMPLES)
    from netrain.define.batch import Batch

    uri = Batch.load(batch).manifest.tracking["uri"]
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_EXPERIMENT_ID"] = str(Batch.load(batch).manifest.tracking["experiment_id"])
    from netrain.train import sequential as training

    bench_models.plain_loop(1, epochs)  # warm-up: imports, first trace
    plain, harness, before = [], [], []

    from netrain.track.journal import JournalWriter

    def through_netrain(index: int) -> float:
        args = TaskArgs("bench", "tiny", epochs, bench_models.SAMPLES, n, False, index)
        runner = TaskRunner(bench_models.configure, args, batch)
        # the training process writes the journal; shipping it is another process's work
        runner.journal = JournalWriter(runner.who.journal, runner.batch.path)
        runner.open_runs()
        t = time.perf_counter()
        failed = runner.train_all(TaskObserver(runner))
        h = time.perf_counter() - t
        runner.close("FINISHED")
        assert failed == 0
        return h

    gc_every = training.GC_EVERY
    for r in range(reps + 1):
        t = time.perf_counter()
        bench_models.plain_loop(n, epochs, seed0=100 * r)
        p = time.perf_counter() - t
        h = through_netrain(2 * r)
        training.GC_EVERY = 1  # before: a full garbage collection after every network
        b = through_netrain(2 * r + 1)
        training.GC_EVERY = gc_every
        if r > 0:  # the first round warms up netrain's path too
            plain.append(p)
            harness.append(h)
            before.append(b)
    os.environ.pop("MLFLOW_TRACKING_URI")
    os.environ.pop("MLFLOW_EXPERIMENT_ID")
    mp, mh, mb = statistics.median(plain), statistics.median(harness), statistics.median(before)
    return {"networks": n, "epochs": epochs, "plain_s": mp, "netrain_s": mh,
            "ratio": mh / mp, "overhead_ms_per_network": 1000 * (mh - mp) / n,
            "before_gc_every_network_s": mb, "before_ratio": mb / mp, "goal": 1.05}


def bench_tracking(work: Path, epochs: int, reps: int) -> dict[str, Any]:
    """Tracking cost per epoch in the training process: the journal (now) against MLflow
    calls from the training process (before: buffered log_batch every 5 s, or one call per
    epoch)."""
    import bench_models
    import keras

    from netrain.track import mlflow_store
    from netrain.track.journal import JournalWriter

    db = work / "tracking.db"
    uri = f"sqlite:///{db}"
    c = mlflow_store.client(uri)
    exp = c.create_experiment("tracking-bench", artifact_location=(work / "art").as_uri())
    x, y = bench_models.data(0)

    class Buffered:
        """What the training process did before the journal: MLflow calls from the training
        loop, metrics buffered into one log_batch every ``every`` seconds."""

        def __init__(self, every: float) -> None:
            from mlflow.entities import Metric

            self.metric, self.every = Metric, every
            self.run_id = c.create_run(exp, run_name="bench").info.run_id
            self.pending: list[Any] = []
            self.last = time.monotonic()

        def log(self, epoch: int, logs: dict[str, Any]) -> None:
            ts = int(time.time() * 1000)
            self.pending += [self.metric(k, float(v), ts, epoch) for k, v in logs.items()]
            if time.monotonic() - self.last >= self.every:
                self.flush()

        def flush(self) -> None:
            self.last = time.monotonic()
            if self.pending:
                c.log_batch(self.run_id, metrics=self.pending)
                self.pending = []

        def end(self) -> None:
            self.flush()
            c.set_terminated(self.run_id, "FINISHED")
    counter = iter(range(10**9))

    class Log(keras.callbacks.Callback):
        def __init__(self, log: Callable[[int, dict[str, Any]], None] | None) -> None:
            super().__init__()
            self.log = log

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if self.log is not None:
                self.log(epoch, logs or {})

    def fit(mode: str) -> None:
        end: Callable[[], None] = lambda: None  # noqa: E731
        log: Callable[[int, dict[str, Any]], None] | None = None
        if mode == "journal":
            j = JournalWriter(work / "journal" / f"{next(counter)}.jsonl", work)
            j.open_run("r", parent=None, name="bench", experiment_id=str(exp), tags={})
            log = lambda e, logs: j.log_metrics("r", e, logs)  # noqa: E731
            end = j.close
        elif mode in ("mlflow", "mlflow_each"):
            handle = Buffered(5.0 if mode == "mlflow" else 0.0)
            log, end = handle.log, handle.end
        m = bench_models.build()
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        m.fit(x[:64], y[:64], batch_size=64, epochs=epochs, verbose=0, callbacks=[Log(log)])
        end()

    for mode in ("off", "journal", "mlflow"):
        fit(mode)
    runs: dict[str, list[float]] = {k: [] for k in ("off", "journal", "mlflow", "mlflow_each")}
    for _ in range(reps):  # interleaved, so drift hits all alike
        for mode in runs:
            runs[mode].append(median_time(lambda mode=mode: fit(mode), 1))  # type: ignore[misc]
    moff, mon, mml, meach = (statistics.median(runs[k]) for k in runs)
    return {"epochs": epochs, "untracked_s": moff, "tracked_s": mon, "ratio": mon / moff,
            "ms_per_epoch": 1000 * (mon - moff) / epochs,
            "before_batched_s": mml, "before_batched_ratio": mml / moff,
            "before_batched_ms_per_epoch": 1000 * (mml - moff) / epochs,
            "before_unbatched_s": meach, "before_ratio": meach / moff,
            "before_ms_per_epoch": 1000 * (meach - moff) / epochs}


def bench_per_task(work: Path, reps: int,
                   launchers: tuple[str, ...] = ("mlflow-cli", "mlflow", "direct")
                   ) -> dict[str, Any]:
    """From process start to the first training step."""
    out: dict[str, Any] = {}
    stamp = work / "first_step"

    def first_step(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
        stamp.unlink(missing_ok=True)
        t0 = time.time()
        subprocess.run(argv, cwd=cwd, env={**os.environ, **env, "BENCH_FIRST_STEP": str(stamp)},
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return float(stamp.read_text()) - t0

    for launcher in launchers:
        cfg = make_project(work / f"task-{launcher}", launcher)
        batch = new_batch(cfg, [("bench", "tiny", 1)], 1, 1, 64)
        script = batch / "scripts" / "bench-tiny-sbatch.sh"
        env = {"SLURM_ARRAY_TASK_ID": "0", "NETRAIN_EXECUTOR": "local",
               "NETRAIN_LOG": str(batch / "logs" / "bench.out"),
               "PATH": f"{BIN}:{os.environ['PATH']}"}
        times = [first_step(["bash", str(script)], batch, env) for _ in range(reps)]
        out[f"netrain_{launcher}_s"] = statistics.median(times)
    out["plain_keras_first_step_s"] = statistics.median(
        [first_step([PY, str(PROJECT / "plain.py"), "1", "1"], PROJECT,
                    {"PYTHONPATH": str(PROJECT)}) for _ in range(reps)])
    out["import_keras_s"] = median_time(
        lambda: subprocess.run([PY, "-c", "import keras"], check=True), reps)
    if "netrain_mlflow-cli_s" in out:
        out["ratio_mlflow_cli"] = out["netrain_mlflow-cli_s"] / out["plain_keras_first_step_s"]
    out["ratio_mlflow"] = out["netrain_mlflow_s"] / out["plain_keras_first_step_s"]
    out["ratio_direct"] = out["netrain_direct_s"] / out["plain_keras_first_step_s"]
    return out


def bench_generate(work: Path, sizes: list[tuple[int, int]], reps: int) -> dict[str, Any]:
    """generate's time for (models, array): it must not grow with the array size."""
    cfg = make_project(work / "generate", "mlflow")
    new_batch(cfg, [("warm", "up", 1)], 1, 1, 64)  # creates the database once
    rows = []
    for models, array in sizes:
        specs = [("m", f"a{i}", 1) for i in range(models)]
        t = median_time(lambda specs=specs, array=array: new_batch(cfg, specs, array, 1, 64),
                        reps)
        rows.append({"models": models, "array": array, "networks": models * array,
                     "seconds": t})
    base = rows[0]["seconds"]
    for r in rows:
        r["ratio"] = r["seconds"] / base
    return {"rows": rows}


def bench_show(work: Path, sizes: list[int], reps: int) -> dict[str, Any]:
    """show with 1k/10k/100k networks recorded (10 networks per task)."""
    from netrain.define.batch import Batch, now_iso
    from netrain.execute.records import NetRecord, TaskRecord, record_path, write_record
    from netrain.results import show as report

    cfg = make_project(work / "show", "direct")
    rows = []
    for nets in sizes:
        tasks = max(1, nets // 10)
        batch_dir = new_batch(cfg, [("show", "big", 10)], tasks, 1, 64)
        for i in range(tasks):
            rec = TaskRecord(model="show.big", index=i, state="finished", started=now_iso(),
                             ended=now_iso(), parent_run_id="0" * 32,
                             nets={str(k): NetRecord(state="finished", run_id="1" * 32,
                                                     name="big", stem=f"big_t{i}_n{k}", epochs=1)
                                   for k in range(10)})
            write_record(record_path(batch_dir, "show-big", i), rec)
        b = Batch.load(batch_dir)
        def read_and_render(path: Path) -> str:
            from netrain.execute.status import batch_status

            batch = Batch.load(path)
            return report.detail(batch, batch_status(batch))

        detail = median_time(lambda b=b: read_and_render(b.path), reps)
        wall = median_time(lambda b=b: cli("show", b.path.name, "--no-scheduler",
                                           cwd=cfg.parent), reps)
        rows.append({"networks": tasks * 10, "tasks": tasks, "detail_s": detail,
                     "cli_wall_s": wall})
    overview = median_time(lambda: cli("show", "--no-scheduler", cwd=cfg.parent), reps)
    return {"rows": rows, "overview_all_batches_cli_s": overview,
            "goal": "under 1 s at 10,000 networks"}


def bench_end_to_end(work: Path, total: int, per_task_nets: int, single: int, epochs: int,
                     reps: int, launchers: tuple[str, ...] = ("mlflow", "direct"),
                     ) -> dict[str, Any]:
    """Whole runs through the local executor vs plain Keras in one process (start-up in)."""
    out: dict[str, Any] = {"networks": total, "epochs": epochs}
    plain_total = median_time(lambda: plain_process(total, epochs), reps)
    plain_single = median_time(lambda: plain_process(single, epochs), reps)
    out["plain_total_s"], out["plain_single_s"] = plain_total, plain_single
    for launcher in launchers:
        cfg = make_project(work / f"e2e-{launcher}", launcher)
        layouts = {"packed": (total // per_task_nets, per_task_nets), "one_per_task": (total, 1)}
        for name, (array, nnets) in layouts.items():
            if name == "one_per_task" and ((launcher != "direct" and total > 8) or total < 8):
                continue  # long (and shown by the direct launcher), or a smoke run
            times = []
            for _ in range(reps if name == "packed" and launcher != "mlflow-cli" else 1):
                batch = new_batch(cfg, [("bench", "tiny", nnets)], array, epochs, 512)
                times.append(cli("run", batch.name, "-j", "2", cwd=cfg.parent))
            key = f"{launcher}_{name}"
            out[f"{key}_layout"] = f"{array} tasks x {nnets} networks"
            out[f"{key}_s"] = statistics.median(times)
            out[f"{key}_ratio"] = out[f"{key}_s"] / plain_total
        times = []
        for _ in range(reps if launcher != "mlflow-cli" else 1):
            batch = new_batch(cfg, [("bench", "tiny", single)], 1, epochs, 512)
            times.append(cli("run", batch.name, cwd=cfg.parent))
        out[f"{launcher}_single_task_s"] = statistics.median(times)
        out[f"{launcher}_single_task_ratio"] = out[f"{launcher}_single_task_s"] / plain_single
    out["goal"] = 1.3
    return out


# ------------------------------------------------------------------------------- report

def machine() -> dict[str, Any]:
    import keras
    import mlflow
    import tensorflow as tf

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "mlflow": mlflow.__version__,
            "platform": platform.platform()}


def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    L = ["# netrain benchmarks", "",
         f"Generated by `bench/run.py{' --smoke' if res['smoke'] else ''}` on "
         f"{res['date']}: {m['cpu']} ({m['cores']} cores, {m['memory']}), Python "
         f"{m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, MLflow "
         f"{m['mlflow']}. Times are medians of {res['reps']} repetitions; every ratio is "
         "against a baseline measured in the same run (lower is better, 1.0 = free).", ""]
    pn = res["per_network"]
    L += ["## Per network: netrain's training path vs plain `model.fit` (same process)", "",
          f"{pn['networks']} tiny networks (Dense 8-16-1, 512 samples, {pn['epochs']} epochs), "
          "tracked (child run, params, per-epoch metrics, 3 artifacts), saved "
          "(weights, architecture, metrics CSV) and recorded.", "",
          "| plain | netrain | ratio | overhead per network | goal |", "|---|---|---|---|---|",
          f"| {pn['plain_s']:.2f} s | {pn['netrain_s']:.2f} s | **{pn['ratio']:.3f}** | "
          f"{pn['overhead_ms_per_network']:.0f} ms | <= {pn['goal']} |", ""]
    changes = [
        ("keras state reset between networks without a full garbage collection each time "
         "(`clear_session(free_memory=False)`, a collection every 16 networks)",
         f"{pn['before_ratio']:.3f}", f"{pn['ratio']:.3f}", "per network"),
    ]
    tr = res["tracking"]
    L += ["## Tracking: metric logging per epoch, in the training process", "",
          "| epochs | how | untracked | tracked | ratio | cost per epoch |",
          "|---|---|---|---|---|---|",
          f"| {tr['epochs']} | journal (now: a separate process ships it) | "
          f"{tr['untracked_s']:.2f} s | {tr['tracked_s']:.2f} s | "
          f"**{tr['ratio']:.3f}** | {tr['ms_per_epoch']:.2f} ms |"]
    if "before_batched_s" in tr:
        L.append(f"| {tr['epochs']} | before: MLflow log_batch every 5 s from the training "
                 f"process | | {tr['before_batched_s']:.2f} s | "
                 f"{tr['before_batched_ratio']:.3f} | {tr['before_batched_ms_per_epoch']:.2f} "
                 "ms |")
    L += [f"| {tr['epochs']} | before that: one MLflow call per epoch | | "
          f"{tr['before_unbatched_s']:.2f} s | {tr['before_ratio']:.3f} | "
          f"{tr['before_ms_per_epoch']:.2f} ms |", ""]
    changes.append(("metrics buffered and sent with one log_batch call every 5 s (and at the "
                    "end) instead of one call per epoch", f"{tr['before_ratio']:.3f}",
                    f"{tr.get('before_batched_ratio', tr['ratio']):.3f}",
                    "tracking, 1-step epochs"))
    if "before_batched_s" in tr:
        changes.append(("the training process appends events to a local journal; a separate "
                        "process ships them to MLflow", f"{tr['before_batched_ratio']:.3f}",
                        f"{tr['ratio']:.3f}", "tracking, 1-step epochs"))
    pt = res["per_task"]
    L += ["## Per task: process start to the first training step", "",
          "| path | seconds | vs plain Keras |", "|---|---|---|",
          f"| `python -c 'import keras'` (whole process) | {pt['import_keras_s']:.2f} | |",
          f"| plain Keras script | {pt['plain_keras_first_step_s']:.2f} | 1.00 |",
          f"| netrain task, entry point called directly (`launcher: direct`) | "
          f"{pt['netrain_direct_s']:.2f} | **{pt['ratio_direct']:.2f}** |",
          f"| netrain task through the `mlflow run` command (`launcher: mlflow-cli`) | "
          f"{pt['netrain_mlflow-cli_s']:.2f} | **{pt['ratio_mlflow_cli']:.2f}** |",
          f"| netrain task through MLflow's Projects API (`launcher: mlflow`, default) | "
          f"{pt['netrain_mlflow_s']:.2f} | **{pt['ratio_mlflow']:.2f}** |", ""]
    g = res["generate"]
    L += ["## generate: must not grow with the array size", "",
          "| models | array | networks | seconds | ratio to the first row |",
          "|---|---|---|---|---|"]
    for r in g["rows"]:
        L.append(f"| {r['models']} | {r['array']} | {r['networks']:,} | {r['seconds']:.2f} | "
                 f"{r['ratio']:.2f} |")
    L.append("")
    s = res["show"]
    L += ["## show: interactive at tens of thousands of networks", "",
          "| networks | tasks | `show BATCH` in process | `netrain show BATCH` wall |",
          "|---|---|---|---|"]
    for r in s["rows"]:
        L.append(f"| {r['networks']:,} | {r['tasks']:,} | {r['detail_s']:.3f} s | "
                 f"{r['cli_wall_s']:.3f} s |")
    L += ["", f"`netrain show` (every batch above, one line each): "
          f"{s['overview_all_batches_cli_s']:.3f} s. Goal: {s['goal']}.", ""]
    e = res["end_to_end"]
    L += ["## End to end, start-up included", "",
          f"{e['networks']} tiny networks through `netrain run -j 2` vs one Python process "
          f"training the same {e['networks']} networks ({e['plain_total_s']:.1f} s); and one "
          f"task of {res['single']} networks vs plain Keras for the same "
          f"({e['plain_single_s']:.1f} s). Goal <= {e['goal']}.", "",
          "| launcher | layout | seconds | ratio |", "|---|---|---|---|"]
    for launcher in ("mlflow-cli", "mlflow", "direct"):
        if f"{launcher}_single_task_s" not in e:
            continue
        for name in ("packed", "one_per_task"):
            key = f"{launcher}_{name}"
            if f"{key}_s" in e:
                L.append(f"| {launcher} | {e[key + '_layout']} | {e[key + '_s']:.1f} | "
                         f"**{e[key + '_ratio']:.2f}** |")
        L.append(f"| {launcher} | one task of {res['single']} networks | "
                 f"{e[launcher + '_single_task_s']:.1f} | "
                 f"**{e[launcher + '_single_task_ratio']:.2f}** |")
    L.append("")
    changes.append(("default launcher: the batch's MLflow project run through MLflow's Projects "
                    "API (`python -m netrain.execute.launcher`, what `mlflow run` calls) instead "
                    "of the "
                    "`mlflow` CLI, whose start-up imports MLflow's server",
                    f"{pt['ratio_mlflow_cli']:.2f}", f"{pt['ratio_mlflow']:.2f}",
                    "per task, start to first step"))
    changes.append(("`launcher: direct` (run the entry point without an MLflow project "
                    "wrapper process; same runs, tags and params)", f"{pt['ratio_mlflow']:.2f}",
                    f"{pt['ratio_direct']:.2f}", "per task, start to first step"))
    for launcher in ("mlflow-cli", "mlflow", "direct"):
        one, packed = f"{launcher}_one_per_task", f"{launcher}_packed"
        if f"{one}_s" in e and f"{packed}_s" in e:
            changes.append((f"pack networks into tasks (`nnets`) instead of one network per task "
                            f"({launcher} launcher: {e[one + '_layout']} -> "
                            f"{e[packed + '_layout']})", f"{e[one + '_ratio']:.2f}",
                            f"{e[packed + '_ratio']:.2f}", "end to end"))
    L += ["## Changes made from these numbers (before -> after, measured in this run)", "",
          "| change | before | after | measured as |", "|---|---|---|---|"]
    L += [f"| {c} | {b} | **{a}** | {m} |" for c, b, a, m in changes]
    for section in sorted((HERE / "sections").glob("*.md")):
        L += ["", section.read_text().strip()]  # measured by the other bench/*.py scripts
    notes = HERE / "NOTES.md"
    if notes.is_file():
        L += ["", notes.read_text().strip()]
    L.append("")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--md", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--only", default=None, help="comma list of sections to run")
    a = ap.parse_args()
    reps = a.reps or (1 if a.smoke else 3)
    single = 2 if a.smoke else 8
    sections = set((a.only or "per_network,tracking,per_task,generate,show,end_to_end")
                   .split(","))
    res: dict[str, Any] = {"smoke": a.smoke, "reps": reps, "single": single,
                           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="netrain-bench-") as d:
        work = Path(d)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("per_network", lambda: bench_per_network(work, 3 if a.smoke else 12,
                                                      2 if a.smoke else 5, reps)),
            ("tracking", lambda: bench_tracking(work, 10 if a.smoke else 200, reps)),
            ("per_task", lambda: bench_per_task(work, reps)),
            ("generate", lambda: bench_generate(
                work, [(2, 2), (2, 100), (20, 100)] if a.smoke
                else [(10, 10), (10, 1000), (1000, 1000)], reps)),
            ("show", lambda: bench_show(work, [100, 1000] if a.smoke
                                        else [1000, 10000, 100000], reps)),
            ("end_to_end", lambda: bench_end_to_end(
                work, 4 if a.smoke else 40, 2 if a.smoke else 20, single,
                2 if a.smoke else 5, reps,
                ("direct",) if a.smoke else ("mlflow-cli", "mlflow", "direct"))),
        ]
        for name, fn in steps:
            if name not in sections:
                continue
            t = time.perf_counter()
            res[name] = fn()
            print(f"bench: {name} done in {time.perf_counter() - t:.0f} s: "
                  f"{json.dumps(res[name])[:300]}", file=sys.stderr, flush=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    if sections >= {"per_network", "tracking", "per_task", "generate", "show", "end_to_end"}:
        Path(a.md).write_text(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
