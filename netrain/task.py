"""One array task: train its networks, record every one as an MLflow child run of the
task's run, keep the files in the batch, and write the task's record for `show`."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netrain.batch import Batch, now_iso
from netrain.contract import build_input, call_config_function, first_line
from netrain.errors import NetrainError, TaskInterrupted, note_interrupt, pending_interrupt
from netrain.records import (
    NetRecord,
    TaskRecord,
    new_record,
    read_record,
    record_path,
    write_record,
)
from netrain.spec import ModelName


@dataclass(frozen=True)
class TaskArgs(ModelName):
    cls: str
    architecture: str
    nb_epoch: int
    epoch_samples: int
    nnets: int
    intelligent: bool
    trainingrun: int
    net_index: int = -1
    retrain_of: str = ""
    from_weights: str = ""

    @property
    def model_key(self) -> str:
        return self.key


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _none(text: str) -> str:
    return "" if text in ("none", "None", "") else text


def parse_task_args(argv: list[str]) -> TaskArgs:
    """The task's command line, as the sbatch script and the MLproject pass it."""
    p = argparse.ArgumentParser(prog="netrain task", add_help=True)
    p.add_argument("--class", dest="cls", required=True)
    p.add_argument("--architecture", required=True)
    p.add_argument("--nb-epoch", "--nb_epoch", type=int, required=True)
    p.add_argument("--epoch-samples", "--epoch_samples", type=int, required=True)
    p.add_argument("--nnets", type=int, default=1)
    p.add_argument("--intelligent", type=_bool, default=False)
    p.add_argument("--trainingrun", type=int, required=True)
    p.add_argument("--net-index", "--net_index", type=int, default=-1)
    p.add_argument("--retrain-of", "--retrain_of", type=_none, default="")
    p.add_argument("--from-weights", "--from_weights", type=_none, default="")
    ns = p.parse_args(argv)
    return TaskArgs(**vars(ns))


def safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "net"


def slurm_job_id() -> str:
    arr = os.environ.get("SLURM_ARRAY_JOB_ID")
    if arr:
        return f"{arr}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID", "")


class _TaskObserver:
    """Turns training events into MLflow runs, files and the task record."""

    def __init__(self, task: TaskRunner) -> None:
        self.t = task
        self.child: Any = None
        self.current: Any = None

    def network_started(self, job: Any) -> None:
        t = self.t
        tags = {**t.common_tags, "net_index": job.net_index, "name": job.config.name,
                **job.config.tags}
        if t.args.retrain_of:
            tags["retrain_of"] = t.args.retrain_of
        self.child = t.tracker.child_run(t.parent, job.config.name, tags)
        self.current = job
        inputs = {k: v for k, v in job_inputs(t, job.net_index).items()
                  if isinstance(v, (str, int, float, bool))}
        self.child.log_params({**inputs, **job.config.scalar_params(),
                               "epoch_samples": job.epoch_samples})
        t.record.nets[str(job.net_index)] = NetRecord(state="running", run_id=self.child.run_id,
                                                      name=job.config.name, stem=job.stem)
        t.save_record()
        if job.config.unknown_keys:
            t.say(f"warning: {job.model_key}: output keys {', '.join(job.config.unknown_keys)} "
                  "are not part of the contract and were ignored")

    def epoch_end(self, job: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.child is not None:
            self.child.log_epoch(epoch, logs)

    def network_finished(self, job: Any, result: Any) -> None:
        t = self.t
        child = self.child
        child.finish(
            tags={"epochs": result.epochs, "stopped_early": result.stopped_early},
            artifacts={"weights": result.files["weights"], "archs": result.files["arch"],
                       "metrics": result.files["metrics"]},
            status="FINISHED")
        rec = t.record.nets[str(job.net_index)]
        rec.state, rec.epochs, rec.final = "finished", result.epochs, result.final
        t.save_record()
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.final.items())
        t.say(f"{job.model_key} task {t.args.trainingrun} net {job.net_index} "
              f"'{job.config.name}': {result.epochs} epochs, {metrics} ({result.seconds:.1f} s)")
        self.child = None

    def network_failed(self, index: int, job: Any, exc: BaseException) -> None:
        t = self.t
        msg = str(exc) if isinstance(exc, NetrainError) else \
            f"{type(exc).__name__}: {first_line(str(exc))}"
        t.say(f"{t.args.model_key} task {t.args.trainingrun} net {index} FAILED: {msg}")
        if not isinstance(exc, NetrainError) or exc.__cause__ is not None:
            traceback.print_exception(exc, file=sys.stderr)
        if self.child is not None:
            with contextlib.suppress(Exception):
                self.child.set_tags({"error": msg[:500]})
                self.child.end("FAILED")
        rec = t.record.nets.get(str(index)) or NetRecord(
            name=job.config.name if job else "", stem=job.stem if job else "")
        rec.state, rec.error = "failed", msg[:1000]
        if self.child is not None:
            rec.run_id = self.child.run_id
        t.record.nets[str(index)] = rec
        t.save_record()
        self.child = None


def job_inputs(t: TaskRunner, net_index: int) -> dict[str, Any]:
    seg_nnets = t.args.nnets
    return build_input(
        cls=t.args.cls, architecture=t.args.architecture, nb_epoch=t.args.nb_epoch,
        epoch_samples=t.args.epoch_samples, nnets=seg_nnets, intelligent=t.args.intelligent,
        batch_dir=t.batch.path, batch=t.batch.id, trainingrun=t.args.trainingrun,
        net_index=net_index, retrain_of=t.args.retrain_of or None,
    )


class TaskRunner:
    def __init__(self, fn: Callable[[dict[str, Any]], Any], args: TaskArgs, batch_dir: Path):
        self.fn = fn
        self.args = args
        self.batch = Batch.load(batch_dir)
        self.model = self.batch.manifest.model(args.model_key)
        self.log = os.environ.get("NETRAIN_LOG", "")
        self.executor = os.environ.get("NETRAIN_EXECUTOR") or (
            "slurm" if os.environ.get("SLURM_JOB_ID") else "local")
        self.slurm_job_id = slurm_job_id() if self.executor == "slurm" else ""
        retrain_key = ""
        if args.retrain_of:
            retrain_key = f"{args.retrain_of[:12]}-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
        self.rpath = record_path(self.batch.path, args.slug, args.trainingrun, retrain_key)
        previous = read_record(self.rpath)
        self.record: TaskRecord = new_record(args.model_key, args.trainingrun, previous, self.log,
                                             self.executor, self.slurm_job_id, args.retrain_of)
        self.common_tags = {
            "batch": self.batch.id, "class": args.cls, "architecture": args.architecture,
            "array_index": args.trainingrun,
            "slurm_job_id": self.slurm_job_id or None,
            "executor": self.executor,
        }
        self.tracker: Any = None
        self.parent: Any = None

    def say(self, text: str) -> None:
        print(f"netrain: {text}", flush=True)

    def save_record(self) -> None:
        write_record(self.rpath, self.record)

    def make_job(self, net_index: int) -> Any:
        from netrain.training import NetworkJob

        inputs = job_inputs(self, net_index)
        cfg = call_config_function(self.fn, inputs, self.args.model_key)
        stem = f"{safe_stem(cfg.name)}_t{self.args.trainingrun}_n{net_index}"
        if self.args.retrain_of:
            stem += f"_retrain-{self.parent.run_id[:8]}"
        init = Path(self.args.from_weights) if self.args.from_weights else None
        if init is not None and not init.is_file():
            raise NetrainError(f"--from-weights file {init} does not exist")
        return NetworkJob(net_index=net_index, model_key=self.args.model_key, config=cfg,
                          seed=inputs["seed"], stem=stem, epoch_samples=self.args.epoch_samples,
                          intelligent=self.args.intelligent, init_weights=init)

    def open_runs(self) -> None:
        """Connect to the tracking backend and open (or resume) the task's run."""
        from netrain import tracking

        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.batch.manifest.tracking["uri"]
        exp = os.environ.get("MLFLOW_EXPERIMENT_ID") or str(
            self.batch.manifest.tracking["experiment_id"])
        self.tracker = tracking.Tracker(uri, exp)
        run_name = f"{self.args.slug}[{self.args.trainingrun}]"
        if self.args.retrain_of:
            run_name += f" retrain of {self.args.retrain_of[:8]}"
        ptags = dict(self.common_tags)
        if self.args.retrain_of:
            ptags["retrain_of"] = self.args.retrain_of
        self.parent = self.tracker.parent_run(run_name, ptags)
        self.record.parent_run_id = self.parent.run_id
        self.save_record()
        self.parent.log_params({
            "class": self.args.cls, "architecture": self.args.architecture,
            "nb_epoch": self.args.nb_epoch, "epoch_samples": self.args.epoch_samples,
            "nnets": self.args.nnets, "intelligent": self.args.intelligent,
            "trainingrun": self.args.trainingrun,
        }, skip_existing=True)

    def train_all(self, observer: _TaskObserver) -> int:
        """Train the task's networks; returns how many failed."""
        from netrain import training

        if self.args.net_index >= 0:
            indices = [self.args.net_index]
        else:
            indices = list(range(self.args.nnets))
        self.say(f"{self.args.model_key} task {self.args.trainingrun}: training "
                 f"{len(indices)} network(s), run {self.parent.run_id}")
        results = training.train_networks(indices, self.make_job, observer)
        failed = sum(1 for r in results if r is None)
        self.record.state = "finished" if failed == 0 else "failed"
        if failed:
            self.record.error = f"{failed} of {len(indices)} network(s) failed"
        return failed

    def run(self) -> int:
        self.save_record()
        old = _install_signal_handlers()
        observer = _TaskObserver(self)
        status = "FAILED"
        try:
            self.open_runs()
            failed = self.train_all(observer)
            status = "FINISHED" if failed == 0 else "FAILED"
            return 0 if failed == 0 else 1
        except TaskInterrupted as exc:
            status = "KILLED"
            return self._interrupted(observer, exc.signum)
        except NetrainError as exc:
            self.record.state = "failed"
            self.record.error = str(exc)
            self.say(f"task FAILED: {exc}")
            return 1
        except Exception as exc:
            signum = pending_interrupt()
            if signum is not None:  # a TaskInterrupted that TensorFlow wrapped
                status = "KILLED"
                return self._interrupted(observer, signum)
            self.record.state = "failed"
            self.record.error = f"{type(exc).__name__}: {first_line(str(exc))}"
            traceback.print_exc()
            return 1
        finally:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the bookkeeping first
            self.close(status)
            _restore_signal_handlers(old)

    def _interrupted(self, observer: _TaskObserver, signum: int) -> int:
        """SIGTERM/SIGINT/USR1: the current network's run and the record end as killed."""
        self.record.state = "killed"
        self.record.error = f"stopped by signal {signal.Signals(signum).name}"
        if observer.child is not None:
            job = observer.current
            with _quiet():
                observer.child.end("KILLED")
            rec = self.record.nets.get(str(job.net_index)) if job else None
            if rec is not None:
                rec.state = "killed"
        self.say(f"task stopped by signal {signum}: runs closed as KILLED")
        return 128 + signum

    def close(self, status: str) -> None:
        """Write the final record and end the task's run (with its log as an artifact)."""
        self.record.ended = now_iso()
        self.save_record()
        if self.parent is not None:
            with _quiet():
                if self.log:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    self.parent.log_artifact(Path(self.log), "logs")
                self.parent.end(status)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _raise_interrupt(signum: int, frame: Any) -> None:
    if pending_interrupt() is not None:
        return  # already stopping (scancel signals every process; the script forwards too)
    note_interrupt(signum)
    raise TaskInterrupted(signum)


def _install_signal_handlers() -> dict[int, Any]:
    old: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        with contextlib.suppress(ValueError):  # not the main thread
            old[sig] = signal.signal(sig, _raise_interrupt)
    return old


def _restore_signal_handlers(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        with contextlib.suppress(ValueError):
            signal.signal(sig, handler)


def run_entry(batch_dir: Path, argv: list[str]) -> int:
    """The batch's MLflow entry point: run the user's main script from the code snapshot,
    with this task's arguments waiting for its ``Netrain(...).run()``."""
    import runpy

    from netrain import app

    args = parse_task_args(argv)
    batch = Batch.load(batch_dir)
    main = batch.path / "code" / batch.manifest.main_script
    if not main.is_file():
        print(f"netrain: main script {main} is missing from the batch's code snapshot",
              file=sys.stderr)
        return 2
    os.environ["NETRAIN_BATCH_DIR"] = str(batch.path)
    app.PENDING_TASK = (args, batch.path)
    sys.path.insert(0, str(main.parent))
    sys.argv = [str(main), *argv]
    try:
        runpy.run_path(str(main), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        pending = app.PENDING_TASK
        app.PENDING_TASK = None
    if pending is not None:
        print(f"netrain: {main.name} never called Netrain(model_configuration_function).run(): "
              "add app.run() at the end of it", file=sys.stderr)
        return 2
    return app.LAST_EXIT
