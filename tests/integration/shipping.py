"""Helpers of the shipping tests: a batch on disk, journals written by the real
JournalWriter (standing in for a training task), a real `netrain server`, and the check that
MLflow holds every run and metric point exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netrain.define.batch import Manifest, new_batch_id, now_iso, write_manifest
from netrain.track.journal import JournalWriter, journal_path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
METRICS = ("loss", "accuracy")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = f"{ROOT}{os.pathsep}{e.get('PYTHONPATH', '')}"
    e["MLFLOW_DISABLE_TELEMETRY"] = "true"
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    return e


def client(uri: str) -> Any:
    from netrain.track.mlflow_store import client as make

    return make(uri)


def make_batch(root: Path, uri: str) -> tuple[Path, str]:
    """A batch directory with a manifest and its MLflow experiment; (dir, experiment id)."""
    from netrain.track.mlflow_store import initialise_sqlite

    batch_id = new_batch_id()
    batch = root / batch_id
    for sub in ("weights", "logs", "records"):
        (batch / sub).mkdir(parents=True)
    initialise_sqlite(uri)
    c = client(uri)
    art = None if uri.startswith("http") else str(root / "mlartifacts")
    exp_id = str(c.create_experiment(batch_id, artifact_location=art))
    write_manifest(batch, Manifest(
        id=batch_id, description="", created=now_iso(), netrain_version="0.1.0", gpu=False,
        main_script="main.py", code={}, tracking={"uri": uri, "experiment_id": exp_id},
        environment={}, launcher="mlflow", slurm={}))
    return batch, exp_id


@dataclass(frozen=True)
class TaskSpec:
    index: int
    nets: int = 2
    epochs: int = 5


def task_key(index: int) -> str:
    return f"task-{index}"


def net_key(index: int, n: int) -> str:
    return f"net-{index}-{n}"


def write_task(batch: Path, exp_id: str, spec: TaskSpec, delay: float = 0.0,
               flush_every: float = 2.0, path: Path | None = None) -> Path:
    """One task's journal, as the training process writes it."""
    p = path or journal_path(batch, "c-a", spec.index)
    w = JournalWriter(p, batch, flush_every=flush_every)
    tk = task_key(spec.index)
    w.open_run(tk, parent=None, name=f"c.a/{spec.index}", experiment_id=exp_id,
               tags={"netrain.task": spec.index})
    w.log_params(tk, {"nnets": spec.nets, "intelligent": False})
    for n in range(spec.nets):
        k = net_key(spec.index, n)
        w.open_run(k, parent=tk, name=f"net {n}", experiment_id=exp_id, tags={"net": n})
        w.log_params(k, {"lr": 0.01 * (n + 1), "net": n})
        for epoch in range(spec.epochs):
            w.log_metrics(k, epoch, {"loss": 1.0 / (epoch + 1), "accuracy": epoch / 10})
            if delay:
                time.sleep(delay)
        wf = batch / "weights" / f"{spec.index}-{n}.weights.h5"
        wf.write_bytes(b"w" * 64)
        w.log_artifacts(k, {"weights": wf})
        w.set_tags(k, {"netrain.state": "done"})
        w.end_run(k, "FINISHED")
    log = batch / "logs" / f"task-{spec.index}.out"
    log.write_text("trained\n")
    w.log_artifacts(tk, {"logs": log})
    w.end_run(tk, "FINISHED")
    w.close()
    return p


def writer_process(batch: Path, exp_id: str, spec: TaskSpec, delay: float) -> Any:
    """write_task in a separate process (a stand-in for a training task)."""
    code = ("import sys; from pathlib import Path; from tests.integration.shipping import *; "
            f"write_task(Path({str(batch)!r}), {exp_id!r}, TaskSpec({spec.index}, {spec.nets}, "
            f"{spec.epochs}), delay={delay}, flush_every=0.2)")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env())


def verify(uri: str, exp_id: str, batch: Path, specs: list[TaskSpec],
           artifacts: bool = True) -> dict[str, int]:
    """Every run once, FINISHED, with its parent, params, every metric step once."""
    c = client(uri)
    runs = c.search_runs([exp_id], max_results=10000)
    by_key: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        by_key[r.data.tags.get("netrain.key", "")].append(r)
    dupes = {k: len(v) for k, v in by_key.items() if len(v) != 1}
    assert not dupes, f"runs per key: {dupes}"
    points = 0
    for spec in specs:
        tk = f"{batch.name}:{task_key(spec.index)}"
        assert tk in by_key, f"missing task run {tk}"
        task = by_key[tk][0]
        assert task.info.status == "FINISHED"
        assert task.data.params == {"nnets": str(spec.nets), "intelligent": "false"}
        if artifacts:
            assert [a.path for a in c.list_artifacts(task.info.run_id, "logs")] == \
                [f"logs/task-{spec.index}.out"]
        for n in range(spec.nets):
            nk = f"{batch.name}:{net_key(spec.index, n)}"
            assert nk in by_key, f"missing network run {nk}"
            run = by_key[nk][0]
            assert run.info.status == "FINISHED", (nk, run.info.status)
            assert run.data.tags["mlflow.parentRunId"] == task.info.run_id
            assert run.data.tags["netrain.state"] == "done"
            assert run.data.params["net"] == str(n)
            for m in METRICS:
                steps = sorted(x.step for x in c.get_metric_history(run.info.run_id, m))
                assert steps == list(range(spec.epochs)), (nk, m, steps)
                points += len(steps)
            if artifacts:
                got = [a.path for a in c.list_artifacts(run.info.run_id, "weights")]
                assert got == [f"weights/{spec.index}-{n}.weights.h5"], got
    assert len(runs) == sum(1 + s.nets for s in specs)
    return {"runs": len(runs), "points": points}


class Server:
    """A real `netrain server` on a free loopback port (restartable on the same port)."""

    def __init__(self, project: Path, backend: str | None = None, port: int | None = None):
        from netrain.track.server import free_port

        self.project = project
        self.backend = backend
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.startup = 0.0
        self.ready_line = ""

    def start(self, timeout: float = 120) -> Server:
        args = [str(BIN / "netrain"), "server", "--port", str(self.port)]
        if self.backend:
            args += ["--backend-store-uri", self.backend]
        t0 = time.monotonic()
        log = self.project / f"server-{self.port}.log"
        with open(log, "a") as err:
            self.proc = subprocess.Popen(args, cwd=self.project, env=env(), text=True,
                                         stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once /health answers
        self.startup = time.monotonic() - t0
        if line.strip() != f"tracking_uri: {self.url}":
            self.stop()
            raise AssertionError(f"netrain server did not start: {line!r} "
                                 f"{log.read_text()[-2000:]}")
        self.ready_line = line.strip()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def project(root: Path, uri: str | None = None) -> Path:
    """A minimal netrain project (netrain.yaml) whose trainings directory is root/trainings."""
    proj = root / "proj"
    (proj / "trainings").mkdir(parents=True, exist_ok=True)
    (proj / "netrain_main.py").write_text("")
    text = "trainings_dir: trainings\nmain_script: netrain_main.py\n"
    if uri:
        text += f"tracking_uri: {uri}\n"
    (proj / "netrain.yaml").write_text(text)
    return proj
