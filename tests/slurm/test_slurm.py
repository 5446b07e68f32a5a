"""netrain on a real SLURM cluster: array jobs, job ids on runs, failures seen by `show`,
resubmission, throttling, an unprivileged user, arrays split under MaxArraySize."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import invoke, make_userproj, mlflow_client, run_cli, wait_until_training
from tests.slurm.batches import (
    TIMEOUT,
    batch_jobs,
    generate,
    show_json,
    states,
    tracking_uri,
    wait_ids,
    wait_jobs,
)


def test_batch_completes_every_network_has_slurm_job_id(tmp_path: Path) -> None:
    proj = make_userproj(tmp_path / "p", "executor: slurm\nlauncher: mlflow\n")
    batch = generate(proj, "--models", "regressor.narrow=2, wide=2", "--array", "4",
                     "--nb-epoch", "2", "--epoch-samples", "128",
                     env={"NETRAIN_SHIP_AFTER": "600"})  # every task leaves it to the sync job
    jobs = batch_jobs(batch)
    assert len(jobs) == 2 and all(j["executor"] == "slurm" for j in jobs)
    wait_jobs(batch)
    data = show_json(proj, batch)
    assert states(data) == [["finished"] * 4] * 2
    assert {t["scheduler"] for m in data["models"] for t in m["tasks"]} == {"COMPLETED"}
    c = mlflow_client(tracking_uri(proj))
    exp = c.get_experiment_by_name(batch.name)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    nets = [r for r in runs if "net_index" in r.data.tags]
    assert len(nets) == 16
    job_ids = {j["job_id"] for j in jobs}
    for r in runs:
        assert r.info.status == "FINISHED"
        jid, task = r.data.tags["slurm_job_id"].split("_")
        assert jid in job_ids and task == r.data.tags["array_index"]
    logs = sorted(p.name for p in (batch / "logs").iterdir() if not p.name.startswith("sync_"))
    assert len(logs) == 8 and all(re.match(r"regressor-(narrow|wide)-.*_\d+_\d\.log", n)
                                  for n in logs)
    # a SQLite store: the tasks left their journals to the batch's sync job (its one
    # writer), which ran once after both arrays and shipped all 8
    assert all("this task does not open it" in (batch / "logs" / n).read_text()
               for n in logs)
    sync_logs = list((batch / "logs").glob("sync_*.log"))
    assert len(sync_logs) == 1
    assert sync_logs[0].read_text().count("runs created") == 8, sync_logs[0].read_text()


def test_failed_index_shown_then_resubmitted_after_fixing_snapshot(proj: Path) -> None:
    env = {"USERPROJ_FAIL_INDEX": "2"}
    batch = generate(proj, "--models", "regressor.narrow=1", "--array", "4", "--nb-epoch", "1",
                     "--epoch-samples", "64", "--no-check", env=env)
    wait_jobs(batch)
    data = show_json(proj, batch)
    assert states(data) == [["finished", "finished", "failed", "finished"]]
    failed = data["models"][0]["tasks"][2]
    assert failed["scheduler"] == "FAILED"
    assert "deliberate failure" in Path(failed["log"]).read_text()
    r = invoke("show", batch.name, cwd=proj)
    assert failed["log"] in r.out
    code = batch / "code" / "mymodels.py"
    code.write_text(code.read_text().replace('fail = os.environ.get("USERPROJ_FAIL_INDEX")',
                                             "fail = None"))
    r = run_cli("resubmit", batch.name, "--failed", cwd=proj, env=env)
    assert r.code == 0, r.text
    jobs = batch_jobs(batch)
    assert len(jobs) == 2 and jobs[1]["indices"] == "2"
    wait_jobs(batch)
    assert states(show_json(proj, batch)) == [["finished"] * 4]


def test_throttle_runs_one_task_at_a_time(proj: Path) -> None:
    batch = generate(proj, "--models", "regressor.narrow=1", "--array", "3", "--nb-epoch", "1",
                     "--epoch-samples", "64", "--max-running", "1", "--no-check")
    assert "#SBATCH --array=0-2%1" in (batch / "scripts" / "regressor-narrow-sbatch.sh").read_text()
    wait_jobs(batch)
    job = batch_jobs(batch)[0]["job_id"]
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", "JobID,Start,End,State"],
                          capture_output=True, text=True, check=True).stdout
    spans = []
    for line in acct.strip().splitlines():
        _, start, end, state = line.split("|")
        assert state == "COMPLETED"
        spans.append((dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)))
    spans.sort()
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two tasks of a %1 array overlapped: {spans}"


def test_scancel_is_shown_and_resubmit_completes(proj: Path) -> None:
    batch = generate(proj, "--models", "regressor.wide=1", "--array", "2", "--nb-epoch", "200",
                     "--epoch-samples", "64", "--no-check", env={"USERPROJ_SLEEP": "0.2"})
    record = batch / "records" / "regressor-wide" / "0.json"
    if not wait_until_training(record, 180):
        pytest.fail("task 0 never started training")
    job = batch_jobs(batch)[0]["job_id"]
    subprocess.run(["scancel", f"{job}_0", f"{job}_1"], check=True)
    wait_jobs(batch)
    data = show_json(proj, batch)
    task0 = data["models"][0]["tasks"][0]
    assert task0["state"] in ("resumable", "cancelled", "killed", "died"), task0
    c = mlflow_client(tracking_uri(proj))
    exp = c.get_experiment_by_name(batch.name)
    assert "RUNNING" not in {r.info.status for r in c.search_runs([exp.experiment_id])}
    r = run_cli("resubmit", batch.name, "--failed", cwd=proj)
    assert r.code == 0, r.text
    wait_jobs(batch)
    assert states(show_json(proj, batch)) == [["finished", "finished"]]


def test_unprivileged_user_submits(tmp_path: Path) -> None:
    try:
        user = pwd.getpwnam("netrain-ci")
    except KeyError:
        pytest.fail("user netrain-ci is missing: scripts/slurm-cluster.sh install creates it")
    python = Path(sys.executable)
    probe = subprocess.run(["runuser", "-u", "netrain-ci", "--", str(python), "-c",
                            "import netrain"], capture_output=True, text=True)
    if probe.returncode != 0:
        msg = f"netrain-ci cannot run {python}: {probe.stderr.strip()[-200:]}"
        if os.environ.get("NETRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    base = Path("/tmp") / f"netrain-unpriv-{os.getpid()}-{time.time_ns()}"
    proj = make_userproj(base, "executor: slurm\n")
    shutil.chown(base, user.pw_uid, user.pw_gid)
    for p in base.rglob("*"):
        shutil.chown(p, user.pw_uid, user.pw_gid)
    try:
        env_args = [f"PATH={python.parent}:/usr/bin:/bin", f"SLURM_CONF={os.environ['SLURM_CONF']}",
                    "HOME=/tmp", "MLFLOW_DISABLE_TELEMETRY=true"]
        p = subprocess.run(["runuser", "-u", "netrain-ci", "--", "env", *env_args,
                            str(python.parent / "netrain"), "generate", "--models",
                            "regressor.narrow=1", "--array", "2", "--nb-epoch", "1",
                            "--epoch-samples", "64", "--run"],
                           cwd=proj, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        batch = Path(p.stdout.strip().splitlines()[0])
        wait_jobs(batch)
        assert states(show_json(proj, batch)) == [["finished", "finished"]]
        logs = list((batch / "logs").iterdir())
        assert logs and all(f.stat().st_uid == user.pw_uid for f in logs)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_array_over_max_array_size_is_split(proj: Path) -> None:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    limit = int(re.search(r"MaxArraySize\s*=\s*(\d+)", out).group(1))
    if limit > 64:
        msg = (f"MaxArraySize is {limit}: start the test cluster with "
               "NETRAIN_SLURM_MAX_ARRAY_SIZE=16")
        if os.environ.get("NETRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    n = limit + 3
    batch = generate(proj, "--models", "regressor.narrow=1", "--array", str(n), "--nb-epoch",
                     "1", "--epoch-samples", "64", "--no-check")
    jobs = batch_jobs(batch)
    assert [(j["offset"], j["indices"]) for j in jobs] == [
        (0, f"0-{limit - 1}"), (limit, f"{limit}-{n - 1}")]
    wait_jobs(batch)
    assert states(show_json(proj, batch)) == [["finished"] * n]
    c = mlflow_client(tracking_uri(proj))
    exp = c.get_experiment_by_name(batch.name)
    nets = c.search_runs([exp.experiment_id], "tags.net_index = '0'", max_results=1000)
    assert sorted(int(r.data.tags["array_index"]) for r in nets) == list(range(n))


def test_runbatch_by_hand_is_seen_by_show(proj: Path) -> None:
    r = invoke("generate", "--models", "regressor.narrow=1, wide=1", "--array", "2",
                "--nb-epoch", "1", "--epoch-samples", "64", "--no-check", cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    p = subprocess.run(["bash", "runbatch.sh"], cwd=batch, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = (batch / "records" / "runbatch-jobs.txt").read_text().split("\n")
    jobs = [ln.split() for ln in lines if ln]
    assert [k for k, _ in jobs] == ["regressor.narrow", "regressor.wide"]
    ids = [j for _, j in jobs]
    deadline = time.monotonic() + TIMEOUT
    while subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"],
                         capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "runbatch.sh jobs did not finish"
        time.sleep(1)
    time.sleep(1.5)
    data = show_json(proj, batch)
    assert states(data) == [["finished", "finished"]] * 2
    assert {t["scheduler"] for m in data["models"] for t in m["tasks"]} == {"COMPLETED"}
    # a SQLite store: submitted by hand too, no task opened it; each model's script
    # submitted a sync job after its array (one at a time), and they shipped everything
    assert "  sync job " in p.stdout
    task_logs = [f for f in (batch / "logs").glob("*.log") if not f.name.startswith("sync_")]
    assert len(task_logs) == 4
    assert all("this task does not open it" in f.read_text() for f in task_logs)
    while subprocess.run(["squeue", "-h", "-n", f"sync-{batch.name}", "-o", "%i"],
                         capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the sync jobs did not finish"
        time.sleep(1)
    c = mlflow_client(tracking_uri(proj))
    runs = c.search_runs([c.get_experiment_by_name(batch.name).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 8


def test_model_script_run_by_hand_submits_its_array(proj: Path) -> None:
    """The original guide: in scripts/, 'bash <class>-<architecture>-sbatch.sh'."""
    r = invoke("generate", "--models", "regressor.narrow=1, wide=1", "--array", "2",
                "--nb-epoch", "1", "--epoch-samples", "64", "--no-check", cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    p = subprocess.run(["bash", "regressor-narrow-sbatch.sh"], cwd=batch / "scripts",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "regressor.narrow: submitted array job" in p.stdout
    [[key, job]] = [ln.split() for ln in
                    (batch / "records" / "runbatch-jobs.txt").read_text().splitlines()]
    assert key == "regressor.narrow" and job.isdigit()
    wait_ids([job])
    data = show_json(proj, batch)
    assert states(data) == [["finished", "finished"], ["pending", "pending"]]
    assert [t["slurm_job_id"] for t in data["models"][0]["tasks"]] == [f"{job}_0", f"{job}_1"]


def test_retrain_on_slurm_is_shown_and_cancelled(proj: Path) -> None:
    batch = generate(proj, "--models", "regressor.narrow=1", "--array", "1", "--nb-epoch", "1",
                     "--epoch-samples", "64", "--no-check")
    wait_jobs(batch)
    c = mlflow_client(tracking_uri(proj))
    exp = c.get_experiment_by_name(batch.name)
    [net] = c.search_runs([exp.experiment_id], "tags.net_index = '0'")
    r = run_cli("retrain", net.info.run_id, "--executor", "slurm", "--nb-epoch", "300",
                cwd=proj, env={"USERPROJ_SLEEP": "0.2"})
    assert r.code == 0, r.text
    m = yaml.safe_load((batch / "batch.yaml").read_text())
    [entry] = m["retrains"]
    [job] = entry["jobs"]
    assert job["executor"] == "slurm" and job["record"].startswith("records/retrain/")
    assert f"submitted job {job['job_id']}" in r.err
    data = show_json(proj, batch)
    [shown] = data["retrain_jobs"]
    assert shown["job_id"] == job["job_id"]
    assert shown["scheduler"] in ("PENDING", "RUNNING", "CONFIGURING")
    assert states(data) == [["finished"]]  # the retrain's job does not stand for task 0
    r = run_cli("cancel", batch.name, cwd=proj)
    assert r.code == 0 and job["job_id"] in r.err, r.text
    wait_ids([job["job_id"]])
    data = show_json(proj, batch)
    assert data["retrain_jobs"][0]["scheduler"] == "CANCELLED"
    assert states(data) == [["finished"]]
    text = invoke("show", batch.name, cwd=proj).out
    assert f"job {job['job_id']} (slurm)" in text and "CANCELLED" in text


def test_submit_tasks_of_a_finished_task_trains_it_again(proj: Path) -> None:
    # SLURM's `run --rerun`: a finished task named with --tasks used to start, keep its
    # finished network and train nothing
    batch = generate(proj, "--models", "regressor.narrow=1", "--array", "1", "--nb-epoch", "2",
                     "--epoch-samples", "64", "--no-check")
    wait_jobs(batch)
    first = json.loads((batch / "records" / "regressor-narrow" / "0.json").read_text())
    assert first["state"] == "finished"
    r = run_cli("submit", batch.name, "--tasks", "0", cwd=proj)
    assert r.code == 0, r.text
    wait_jobs(batch)
    rec = json.loads((batch / "records" / "regressor-narrow" / "0.json").read_text())
    assert rec["state"] == "finished" and rec["attempt"] == 2, rec
    assert rec["key"] == "regressor-narrow/0~2", rec  # new runs, tagged rerun
    assert rec["nets"]["0"]["key"] != first["nets"]["0"]["key"]
