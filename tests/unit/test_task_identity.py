"""A task's identity, read once from its environment; the key and tags of its runs (pure);
the GPU probe; the lock that keeps one process per task."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from netrain import env as names
from netrain.execute.records import TaskRecord
from netrain.execute.tasklock import TaskLock, held, lock_path
from netrain.train.identity import (
    TaskIdentity,
    gpu_model,
    network_run_tags,
    parse_task_args,
    task_key,
    task_run_tags,
)

ARGV = ["--class", "regressor", "--architecture", "narrow", "--nb-epoch", "3",
        "--epoch-samples", "8", "--nnets", "2", "--intelligent", "false", "--trainingrun", "4"]
TRACKING = {"uri": "sqlite:///b/mlflow.db", "experiment_id": "7"}


def test_identity_outside_slurm_takes_the_batch_defaults(tmp_path: Path) -> None:
    who = TaskIdentity.read(parse_task_args(ARGV), tmp_path, TRACKING, environ={})
    assert (who.executor, who.slurm_job_id, who.log, who.retrain_key) == ("local", "", "", "")
    assert who.journal == tmp_path / "journal" / "regressor-narrow" / "4.jsonl"
    assert (who.experiment_id, who.tracking_uri) == ("7", "sqlite:///b/mlflow.db")
    assert (who.rerun, dict(who.launcher_tags), who.adopt_run_id) == ("", {}, "")


def test_identity_from_slurm_and_the_launcher(tmp_path: Path) -> None:
    environ = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "4",
               "SLURM_RESTART_COUNT": "2", names.JOURNAL: str(tmp_path / "j.jsonl"),
               names.LOG: "/l.log", names.RERUN: "finished", "MLFLOW_EXPERIMENT_ID": "9",
               "MLFLOW_TRACKING_URI": "http://t:5000", names.RUN_TAGS: '{"mlflow.user": "u"}'}
    who = TaskIdentity.read(parse_task_args(ARGV), tmp_path, TRACKING, environ=environ)
    assert (who.executor, who.slurm_job_id, who.log) == ("slurm", "10_4", "/l.log")
    assert who.journal == tmp_path / "j.jsonl"
    assert (who.experiment_id, who.tracking_uri, who.rerun) == ("9", "http://t:5000", "finished")
    assert dict(who.launcher_tags) == {"mlflow.user": "u"}
    # the local executor says so itself (its tasks may inherit SLURM's variables)
    local = TaskIdentity.read(parse_task_args(ARGV), tmp_path, TRACKING,
                              environ={**environ, names.EXECUTOR: "local",
                                       names.RUN_TAGS: "not json"})
    assert (local.executor, local.slurm_job_id, dict(local.launcher_tags)) == ("local", "", {})


def test_a_retrain_has_its_own_journal(tmp_path: Path) -> None:
    args = parse_task_args([*ARGV, "--retrain-of", "abcdef0123456789"])
    who = TaskIdentity.read(args, tmp_path, TRACKING, environ={names.RETRAIN_KEY: "abcdef01-x-1"})
    assert who.retrain_key == "abcdef01-x-1"
    assert who.journal == tmp_path / "journal" / "retrain" / "abcdef01-x-1.jsonl"


def test_the_task_key_is_kept_across_attempts_unless_rerun() -> None:
    finished = TaskRecord(model="m", index=0, state="finished", key="m/0")
    failed = TaskRecord(model="m", index=0, state="failed", key="m/0~2")
    assert task_key("m/0", None, "1", 1) == "m/0"
    assert task_key("m/0", failed, "", 3) == "m/0~2"  # the same run as the last attempt
    assert task_key("m/0", finished, "1", 2) == "m/0~2"
    assert task_key("m/0", finished, "finished", 2) == "m/0~2"
    assert task_key("m/0", failed, "finished", 3) == "m/0~2"  # resumes instead


def test_run_tags() -> None:
    who = TaskIdentity(executor="slurm", slurm_job_id="10_4", log="", retrain_key="",
                       journal=Path("j"), experiment_id="7", tracking_uri="",
                       launcher_tags={"mlflow.user": "u"}, slurm_restart_count="1")
    base = {"batch": "b", "host": "h"}
    assert task_run_tags(base, who, attempt=2, key="m/0~2", retrain_of="r1", gpu="H200") == {
        "batch": "b", "host": "h", "netrain.attempt": 2, "mlflow.user": "u", "gpu": "H200",
        "slurm_restart_count": "1", "retrain_of": "r1", "rerun": 2}
    assert task_run_tags(base, who, attempt=1, key="m/0", retrain_of="", gpu="") == {
        "batch": "b", "host": "h", "netrain.attempt": 1, "mlflow.user": "u",
        "slurm_restart_count": "1"}
    job = SimpleNamespace(net_index=3, config=SimpleNamespace(name="n3", tags={"k": "v"}),
                          pack_group=4)
    assert network_run_tags(base, job, attempt=1, task_key="m/0", retrain_of="") == {
        "batch": "b", "host": "h", "net_index": 3, "name": "n3", "k": "v", "netrain.packed": 4}
    job.pack_fallback = "out of memory"
    tags = network_run_tags(base, job, attempt=2, task_key="m/0~2", retrain_of="r")
    assert (tags["netrain.packed"], tags["netrain.pack_fallback"], tags["rerun"],
            tags["retrain_of"]) == (0, "out of memory", 2, "r")


def test_gpu_model_reads_the_drivers_files(tmp_path: Path) -> None:
    assert gpu_model(tmp_path / "absent") == ""
    info = tmp_path / "0000:01:00.0"
    info.mkdir()
    (info / "information").write_text("Model: \t NVIDIA H200\nIRQ: 5\n")
    assert gpu_model(tmp_path) == "NVIDIA H200"


def test_one_process_per_task(tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "m" / "0.jsonl"
    assert not held(journal)
    first = TaskLock(journal)
    assert first.take() and held(journal)
    second = TaskLock(journal)  # another open file: flock refuses it as another process
    assert not second.take() and second.holder.startswith("pid ")
    os.close(first.fd)  # as when its process ends: the file stays, nobody holds it
    assert lock_path(journal).is_file() and not held(journal)
    assert second.take()
