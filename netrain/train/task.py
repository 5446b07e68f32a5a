"""One array task: train its networks (resuming unfinished ones from their checkpoints),
write every tracking event to the task's journal (never to MLflow itself), keep the files in
the batch, and write the task's record for `show`."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from netrain.define import checkpoint
from netrain.define.batch import Batch, now_iso
from netrain.define.contract import build_input, call_config_function, first_line
from netrain.errors import NetrainError, TaskInterrupted, pending_interrupt
from netrain.execute.records import (
    NetRecord,
    TaskRecord,
    new_record,
    read_record,
    record_path,
    write_record,
)
from netrain.execute.status import code_edited
from netrain.execute.tasklock import TaskLock
from netrain.track.journal import JournalWriter, logged_steps
from netrain.track.plan import for_task
from netrain.track.task_shipper import TaskShipper
from netrain.train.identity import (
    TaskArgs,
    TaskIdentity,
    common_tags,
    gpu_model,
    network_run_tags,
    parse_task_args,
    source_tags,
    task_key,
    task_run_tags,
)
from netrain.train.stops import (
    STORAGE_EXIT,
    StorageFailed,
    install_signal_handlers,
    restore_signal_handlers,
    storage_error,
    storage_line,
)

__all__ = ["TaskArgs", "TaskObserver", "TaskRunner", "parse_task_args",
           "run_entry", "summary"]


def safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "net"


class TaskObserver:
    """Turns training events into journal events, files and the task record."""

    def __init__(self, task: TaskRunner) -> None:
        self.t = task
        # the networks whose runs are open, by key: one at a time in sequence, a whole group
        # at once when packed (its runs open before it trains)
        self.open: dict[str, Any] = {}

    def network_started(self, job: Any) -> None:
        t = self.t
        tags = network_run_tags(t.tags, job, attempt=t.record.attempt, task_key=t.key,
                                retrain_of=t.args.retrain_of)
        t.journal.open_run(job.key, parent=t.key, name=job.stem,
                           experiment_id=t.who.experiment_id, tags=tags)
        self.open[job.key] = job
        if job.resume is None:
            inputs = {k: v for k, v in job_inputs(t, job.net_index).items()
                      if isinstance(v, (str, int, float, bool))}
            t.journal.log_params(job.key, {**inputs, **job.config.scalar_params(),
                                           "epoch_samples": job.epoch_samples})
        else:
            t.journal.set_tags(job.key, {"netrain.resumed_from_epoch": job.resume.epoch,
                                         "netrain.state": "running"})
            # The checkpoint's epochs that the journal lost (its metrics lines wait up to 2 s
            # in memory; a SIGKILL right after a checkpoint drops them): logged from the
            # checkpoint's history, since training resumes after them.
            hist = job.resume.history
            logged = t.logged.get(job.key, -1)
            for epoch in range(logged + 1, job.resume.epoch):
                values = {k: v[epoch] for k, v in hist.items() if epoch < len(v)}
                if values:
                    t.journal.log_metrics(job.key, epoch, values)
            t.logged[job.key] = max(logged, job.resume.epoch - 1)
            t.say(f"{job.model_key} task {t.args.trainingrun} net {job.net_index}: resuming "
                  f"from its checkpoint at epoch {job.resume.epoch}")
        t.record.nets[str(job.net_index)] = NetRecord(
            state="running", key=job.key, name=job.config.name, stem=job.stem,
            checkpoint_epoch=job.resume.epoch if job.resume else 0)
        t.save_record()
        if job.config.unknown_keys:
            t.say(f"warning: {job.model_key}: output keys {', '.join(job.config.unknown_keys)} "
                  "are not part of the contract and were ignored")

    def epoch_end(self, job: Any, epoch: int, logs: dict[str, float]) -> None:
        # a resumed network re-trains at most the epochs after its checkpoint: a step the
        # journal already holds is not logged twice
        if epoch > self.t.logged.get(job.key, -1):
            self.t.journal.log_metrics(job.key, epoch, logs)

    def network_finished(self, job: Any, result: Any) -> None:
        t = self.t
        t.journal.set_tags(job.key, {"epochs": result.epochs,
                                     "stopped_early": result.stopped_early,
                                     "netrain.state": "finished"})
        t.journal.log_artifacts(job.key, {"weights": result.files["weights"],
                                          "archs": result.files["arch"],
                                          "metrics": result.files["metrics"]})
        t.journal.end_run(job.key, "FINISHED")
        rec = t.record.nets[str(job.net_index)]
        rec.state, rec.epochs, rec.final = "finished", result.epochs, result.final
        rec.checkpoint_epoch = 0
        t.save_record()
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.final.items())
        t.say(f"{job.model_key} task {t.args.trainingrun} net {job.net_index} "
              f"'{job.config.name}': {result.epochs} epochs, {metrics} ({result.seconds:.1f} s)")
        self.open.pop(job.key, None)

    def network_failed(self, index: int, job: Any, exc: BaseException) -> None:
        t = self.t
        err = storage_error(exc)
        if err is not None:  # the next network would fail the same way: stop, resumable
            raise StorageFailed(err) from None
        msg = str(exc) if isinstance(exc, NetrainError) else \
            f"{type(exc).__name__}: {first_line(str(exc))}"
        t.say(f"{t.args.model_key} task {t.args.trainingrun} net {index} FAILED: {msg}")
        if not isinstance(exc, NetrainError) or exc.__cause__ is not None:
            traceback.print_exception(exc, file=sys.stderr)
        rec = t.record.nets.get(str(index)) or NetRecord(
            name=job.config.name if job else "", stem=job.stem if job else "")
        if job is not None and self.open.pop(job.key, None) is not None:
            t.journal.set_tags(job.key, {"error": msg[:500], "netrain.state": "failed"})
            t.journal.end_run(job.key, "FAILED")
            rec.key = job.key
        rec.state, rec.error = "failed", msg[:1000]
        t.record.nets[str(index)] = rec
        t.save_record()

    def interrupted(self) -> None:
        """The networks in training saved their checkpoints: their runs wait, resumable."""
        for job in list(self.open.values()):
            self.network_interrupted(job)

    def network_interrupted(self, job: Any) -> None:
        """A network stopped by the signal (its checkpoint written, if checkpoints are on):
        its run waits, resumable (the packed trainer calls this for each of its networks)."""
        t = self.t
        t.journal.set_tags(job.key, {"netrain.state": "resumable",
                                     "netrain.resume_epoch": job.checkpoint_epoch})
        t.journal.end_run(job.key, "KILLED")
        rec = t.record.nets.get(str(job.net_index))
        if rec is not None:
            rec.state, rec.checkpoint_epoch = "interrupted", job.checkpoint_epoch
        self.open.pop(job.key, None)


def job_inputs(t: TaskRunner, net_index: int) -> dict[str, Any]:
    return build_input(
        cls=t.args.cls, architecture=t.args.architecture, nb_epoch=t.args.nb_epoch,
        epoch_samples=t.args.epoch_samples, nnets=t.args.nnets, intelligent=t.args.intelligent,
        batch_dir=t.batch.path, batch=t.batch.id, trainingrun=t.args.trainingrun,
        net_index=net_index, retrain_of=t.args.retrain_of or None,
    )


class TaskRunner:
    """Runs one task: takes its lock, opens its runs, trains its networks through the
    observer, and ends (its record, its runs, its shipper) however training ended."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any], args: TaskArgs, batch_dir: Path,
                 environ: Mapping[str, str] | None = None):
        self.fn = fn
        self.args = args
        self.batch = Batch.load(batch_dir)
        self.model = self.batch.manifest.model(args.model_key)
        self.who = who = TaskIdentity.read(args, self.batch.path, self.batch.manifest.tracking,
                                           environ)
        self.rpath = record_path(self.batch.path, args.slug, args.trainingrun, who.retrain_key)
        self.previous = read_record(self.rpath)
        self.record: TaskRecord = new_record(args.model_key, args.trainingrun, self.previous,
                                             who.log, who.executor, who.slurm_job_id,
                                             args.retrain_of)
        base = (f"retrain/{who.retrain_key}" if who.retrain_key
                else f"{args.slug}/{args.trainingrun}")
        self.key = task_key(base, self.previous, who.rerun, self.record.attempt)
        self.record.key = self.key
        with contextlib.suppress(ValueError):
            self.record.journal = str(who.journal.relative_to(self.batch.path))
        self.logged = logged_steps(who.journal) if who.journal.is_file() else {}
        from netrain.execute.launcher import project_tags

        #: the tags of every run of the task: its own and its networks'
        self.tags = {**common_tags(who, args, self.batch.id),
                     **source_tags(project_tags(self.batch.path, "train", "local"), who.host,
                                   code_edited(self.batch))}
        self.journal: Any = None
        self.signum: int | None = None
        self.lock = TaskLock(who.journal)
        self.shipper = TaskShipper(who.journal, self.batch.path, who.tracking_uri,
                                   for_task(who.tracking_uri, launcher=False, environ=environ))

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError):  # a log on a full disk
            print(f"netrain: {text}", flush=True)

    def save_record(self) -> None:
        write_record(self.rpath, self.record)

    def make_job(self, net_index: int) -> Any:
        from netrain.train.sequential import NetworkJob

        inputs = job_inputs(self, net_index)
        cfg = call_config_function(self.fn, inputs, self.args.model_key)
        stem = f"{safe_stem(cfg.name)}_t{self.args.trainingrun}_n{net_index}"
        rkey = self.who.retrain_key
        if rkey:
            stem += f"_retrain-{rkey.split('-')[1] if '-' in rkey else ''}"
        init = Path(self.args.from_weights) if self.args.from_weights else None
        if init is not None and not init.is_file():
            raise NetrainError(f"--from-weights file {init} does not exist")
        key = f"{self.key}/n{net_index}"
        policy = checkpoint.Policy.from_mapping(
            cfg.checkpoint or None, self.policy())
        resume = checkpoint.read(self.batch.path, stem, key) if policy.enabled else None
        return NetworkJob(net_index=net_index, model_key=self.args.model_key, config=cfg,
                          seed=inputs["seed"], stem=stem, epoch_samples=self.args.epoch_samples,
                          intelligent=self.args.intelligent, init_weights=init, key=key,
                          batch_dir=self.batch.path, policy=policy, resume=resume)

    def policy(self) -> checkpoint.Policy:
        settings = self.batch.manifest.checkpoint
        try:
            return checkpoint.Policy.from_mapping(settings)
        except ValueError:
            return checkpoint.Policy()

    def open_runs(self) -> None:
        """Open (or reopen: the same key is the same MLflow run) the task's run."""
        run_name = f"{self.args.slug}[{self.args.trainingrun}]"
        if self.args.retrain_of:
            run_name += f" retrain of {self.args.retrain_of[:8]}"
        ptags = task_run_tags(self.tags, self.who, attempt=self.record.attempt, key=self.key,
                              retrain_of=self.args.retrain_of, gpu=gpu_model())
        self.journal.open_run(self.key, parent=None, name=run_name,
                              experiment_id=self.who.experiment_id, tags=ptags,
                              adopt=self.who.adopt_run_id or None)
        self.journal.log_params(self.key, {
            "class": self.args.cls, "architecture": self.args.architecture,
            "nb_epoch": self.args.nb_epoch, "epoch_samples": self.args.epoch_samples,
            "nnets": self.args.nnets, "intelligent": self.args.intelligent,
            "trainingrun": self.args.trainingrun,
        })
        self.save_record()

    def todo(self) -> list[int]:
        """The task's networks, less those a previous attempt of it finished."""
        indices = [self.args.net_index] if self.args.net_index >= 0 else \
            list(range(self.args.nnets))
        prev = self.previous
        if prev is None or prev.key != self.key:
            return indices
        done = []
        for i in indices:
            n = prev.nets.get(str(i))
            if n is not None and n.state == "finished":
                self.record.nets[str(i)] = n
                done.append(i)
        if done:
            self.say(f"{self.args.model_key} task {self.args.trainingrun}: {len(done)} "
                     "network(s) finished in an earlier attempt are kept")
        return [i for i in indices if i not in done]

    def train_all(self, observer: TaskObserver) -> int:
        """Train the task's networks; returns how many failed."""
        from netrain.train import packed

        indices = self.todo()
        self.say(f"{self.args.model_key} task {self.args.trainingrun}: training "
                 f"{len(indices)} network(s), attempt {self.record.attempt}")
        results = packed.train_networks_maybe_packed(indices, self.make_job, observer,
                                                     pack=self.args.pack)
        failed = sum(1 for r in results if r is None)
        self.record.state = "finished" if failed == 0 else "failed"
        if failed:
            self.record.error = f"{failed} of {len(indices)} network(s) failed"
        return failed

    def run(self) -> int:
        # One process trains a task at a time: a second one stops before it touches anything
        if not self.lock.take():
            self.say(f"{self.args.model_key} task {self.args.trainingrun} is already being "
                     f"trained by another process ({self.lock.holder}): not starting twice")
            return 3
        self.save_record()
        old = install_signal_handlers()
        observer = TaskObserver(self)
        status = "FAILED"
        try:
            self.journal = JournalWriter(self.who.journal, self.batch.path)
            self.shipper.start()
            self.open_runs()
            failed = self.train_all(observer)
            status = "FINISHED" if failed == 0 else "FAILED"
            return 0 if failed == 0 else 1
        except (Exception, TaskInterrupted) as exc:
            status, code = self._stopped_by(exc, observer)
            return code
        finally:
            self.close(status)
            restore_signal_handlers(old)

    def _stopped_by(self, exc: BaseException, observer: TaskObserver) -> tuple[str, int]:
        """How the task ends on ``exc``: its run's status and its exit code (a signal or a
        failed write: resumable; anything else: failed)."""
        if isinstance(exc, StorageFailed):
            return "KILLED", self._storage_failed(observer, exc)
        if isinstance(exc, TaskInterrupted):
            return "KILLED", self._interrupted(observer, exc.signum)
        if isinstance(exc, NetrainError):
            self.record.state = "failed"
            self.record.error = str(exc)
            self.say(f"task FAILED: {exc}")
            return "FAILED", 1
        signum = pending_interrupt()
        if signum is not None:  # a stop that TensorFlow wrapped in its own error
            return "KILLED", self._interrupted(observer, signum)
        err = storage_error(exc)
        if err is not None:
            return "KILLED", self._storage_failed(observer, StorageFailed(err))
        self.record.state = "failed"
        self.record.error = f"{type(exc).__name__}: {first_line(str(exc))}"
        traceback.print_exception(exc)
        for job in list(observer.open.values()):  # no run is left RUNNING
            observer.network_failed(job.net_index, job, exc)
        return "FAILED", 1

    def _interrupted(self, observer: TaskObserver, signum: int) -> int:
        """A signal: the network in training kept its checkpoint; the task is resumable."""
        self.signum = signum
        observer.interrupted()
        self.record.state = "killed"
        self.record.error = f"stopped by signal {signal.Signals(signum).name}"
        reached = [n for n in self.record.nets.values() if n.state == "interrupted"]
        where = (f"; net {reached[0].stem} resumes at epoch {reached[0].checkpoint_epoch}"
                 if reached else "")
        self.say(f"task stopped by signal {signal.Signals(signum).name}: checkpoint kept, "
                 f"runs left resumable{where}")
        return 128 + signum

    def _storage_failed(self, observer: TaskObserver, exc: StorageFailed) -> int:
        """A write failed for want of room or access: the networks in training keep their
        last checkpoints, their runs wait resumable; exit 75 (EX_TEMPFAIL: try again)."""
        observer.interrupted()
        self.record.state = "killed"
        self.record.error = f"stopped: {exc.line}"
        self.say(f"task stopped: {exc.line}; its networks keep their last checkpoints and "
                 "resume at the next run once there is room")
        return STORAGE_EXIT

    def close(self, status: str) -> None:
        """Write the final record and end the task's run (with its log as an artifact)."""
        self.record.ended = now_iso()
        try:
            self.save_record()
        except OSError as exc:  # a full disk: the runs below are closed all the same
            self.say(f"{storage_line(exc)}: the task's record keeps its last state")
        if self.journal is None:
            return
        with contextlib.suppress(Exception):
            self.journal.log_metrics(self.key, self.record.attempt - 1, summary(self.record))
            # the task run's state says how this attempt ended (an earlier attempt that
            # died left "died" on the same run)
            self.journal.set_tags(self.key, {"netrain.state": {
                "KILLED": "resumable", "FINISHED": "finished"}.get(status, "failed")})
            if self.who.log and Path(self.who.log).is_file():
                sys.stdout.flush()
                sys.stderr.flush()
                self.journal.log_artifacts(self.key, {"logs": Path(self.who.log)})
            self.journal.end_run(self.key, status)
        with contextlib.suppress(Exception):
            self.journal.close()
        self.shipper.wait()


def summary(record: TaskRecord) -> dict[str, float]:
    """The task run's summary metrics: networks finished, best and median final loss."""
    finals = [n.final for n in record.nets.values() if n.state == "finished"]
    out: dict[str, float] = {"networks_finished": float(len(finals))}
    for name in ("val_loss", "loss"):
        values = sorted(f[name] for f in finals if name in f)
        if values:
            out[f"best_{name}"] = values[0]
            mid = len(values) // 2
            out[f"median_{name}"] = values[mid] if len(values) % 2 else \
                (values[mid - 1] + values[mid]) / 2
    return out


def run_entry(batch_dir: Path, argv: list[str]) -> int:
    """The batch's MLflow entry point: load the user's main script from the code snapshot
    and train the array task its arguments name."""
    from netrain.define.loader import ScriptError, batch_environment, load_config_function

    args = parse_task_args(argv)
    batch = Batch.load(batch_dir)
    main = batch.path / "code" / batch.manifest.main_script
    if not main.is_file():
        print(f"netrain: main script {main} is missing from the batch's code snapshot",
              file=sys.stderr)
        return 2
    batch_environment(batch.path)
    try:
        fn = load_config_function(main, argv)
    except ScriptError as exc:
        print(f"netrain: {exc}", file=sys.stderr)
        return 2
    return TaskRunner(fn, args, batch.path).run()
