"""The executor: one door that starts tasks here or on SLURM and records every job it starts
(retrains too) in batch.yaml. SLURM through a fake runner; local tasks are real processes
(tiny bash scripts standing in for the sbatch scripts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from netrain.define.batch import Batch, Manifest, ModelEntry, Segment, write_manifest
from netrain.execute import executor as ex
from netrain.execute.records import TaskRecord, record_path, write_record
from netrain.execute.slurm import Result


class Sbatch:
    """Answers scontrol and sbatch (new ids from 500 on) and records the calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Result:
        self.calls.append(list(argv))
        if argv[0] == "sbatch":
            return Result(0, f"{500 + len(self.calls)}\n", "")
        return Result(0, "MaxArraySize = 1001\n", "")


def _seg(start: int, count: int) -> Segment:
    return Segment(start, count, 1, 1, 10, False, "")


@pytest.fixture
def batch(tmp_path: Path, make_manifest: Callable[..., Manifest]) -> Batch:
    d = tmp_path / "b"
    for sub in ("scripts", "logs", "records"):
        (d / sub).mkdir(parents=True)
    (d / ".lock").touch()
    m = make_manifest(models=[ModelEntry("regressor", "narrow", [_seg(0, 4)]),
                              ModelEntry("regressor", "wide", [_seg(0, 2)])])
    write_manifest(d, m)
    b = Batch.load(d)
    for model in m.models:
        # exits with the code in FAIL_<index> (default 0) and says which key it was given
        b.script_path(model).write_text(
            'i=$SLURM_ARRAY_TASK_ID; eval "rc=\\${FAIL_$i:-0}"\n'
            'echo "key=${NETRAIN_RETRAIN_KEY:-}"\nexit $rc\n')
    return b


def on_server(b: Batch, uri: str = "http://tracking.example:5000") -> Batch:
    """The batch tracked by a server (its tasks may ship for themselves)."""
    b.manifest.tracking["uri"] = uri
    b.save()
    return Batch.load(b.path)


def finished(b: Batch, slug: str, index: int) -> None:
    write_record(record_path(b.path, slug, index),
                 TaskRecord(model=slug.replace("-", "."), index=index, state="finished"))


def test_slurm_submits_unfinished_tasks_and_records_the_jobs(batch: Batch) -> None:
    batch = on_server(batch)
    finished(batch, "regressor-narrow", 1)
    runner, said = Sbatch(), []
    started = ex.start(batch, "slurm", ex.Selection.of(batch), say=said.append, runner=runner)
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert [c[2] for c in sbatch[:2]] == ["--array=0,2-3%4", "--array=0-1%4"]
    assert all("NETRAIN_SHIP_LATER=1" in c[3] for c in sbatch[:2])
    # then one sync job after both arrays, which ships what their short tasks left
    ids = ":".join(j.job_id for j in started.jobs)
    assert sbatch[2][2] == f"--dependency=afterany:{ids},singleton" and len(sbatch) == 3
    assert any(line.startswith("submitted sync job ") for line in said)
    again = Batch.load(batch.path)
    jobs = {m.key: [(j.job_id, j.indices, j.executor) for j in m.jobs]
            for m in again.manifest.models}
    assert jobs == {"regressor.narrow": [(started.jobs[0].job_id, "0,2-3", "slurm")],
                    "regressor.wide": [(started.jobs[1].job_id, "0-1", "slurm")]}
    assert ex.slurm_job_ids(again) == [j.job_id for j in started.jobs]
    # cancel --tasks: those array tasks only, as JOBID_INDEX
    narrow, wide = (j.job_id for j in started.jobs)
    assert ex.slurm_job_ids(again, tasks=[1, 2]) == [f"{narrow}_2", f"{wide}_1"]
    assert ex.slurm_job_ids(again, ["regressor.wide"], [0, 3]) == [f"{wide}_0"]
    assert ex.default_executor(again) == "slurm"


def test_named_tasks_go_even_when_finished(batch: Batch) -> None:
    batch = on_server(batch)
    finished(batch, "regressor-narrow", 1)
    runner = Sbatch()
    sel = ex.Selection.of(batch, ["regressor.narrow"], [1], skip_finished=False)
    ex.start(batch, "slurm", sel, say=lambda _: None, runner=runner)
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    # one task ships for itself: no NETRAIN_SHIP_LATER, no sync job
    assert [c[2] for c in sbatch] == ["--array=1%4"]
    assert "NETRAIN_SHIP_LATER" not in sbatch[0][3]


def test_sqlite_store_on_slurm_leaves_every_task_to_the_sync_job(batch: Batch) -> None:
    # a SQLite store: even one task leaves its journal to a sync job, and never ships itself
    runner, said = Sbatch(), []
    sel = ex.Selection.of(batch, ["regressor.narrow"], [1], skip_finished=False)
    ex.start(batch, "slurm", sel, say=said.append, runner=runner)
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert sbatch[0][2] == "--array=1%4" and "NETRAIN_SHIP_LATER=always" in sbatch[0][3]
    assert len(sbatch) == 2 and sbatch[1][2].startswith("--dependency=afterany:")
    assert any("one writer" in line for line in said)
    # a retrain too: its own sync job after it
    runner = Sbatch()
    ex.start(batch, "slurm", ex.Selection.retraining(_retrain(batch)), say=lambda _: None,
             runner=runner)
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert "NETRAIN_SHIP_LATER=always" in sbatch[0][3] and len(sbatch) == 2
    assert sbatch[1][2] == (f"--dependency=afterany:{500 + runner.calls.index(sbatch[0]) + 1}"
                            ",singleton")


def test_unknown_task_and_executor_are_errors(batch: Batch) -> None:
    from netrain.errors import BatchError, UsageError

    with pytest.raises(BatchError, match=r"regressor\.wide has no array task 7"):
        ex.start(batch, "slurm", ex.Selection.of(batch, ["regressor.wide"], [7]),
                 runner=Sbatch())
    with pytest.raises(UsageError, match="unknown executor"):
        ex.start(batch, "kubernetes", ex.Selection.of(batch))


def test_local_runs_tasks_counts_failures_and_records_one_job(
        batch: Batch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_2", "3")
    said: list[str] = []
    started = ex.start(batch, "local", ex.Selection.of(batch, ["regressor.narrow"]),
                       workers=2, say=said.append)
    assert (started.ran, started.failures) == (4, 1)
    assert said[-1].endswith("3 ok, 1 failed")
    jobs = Batch.load(batch.path).manifest.model("regressor.narrow").jobs
    assert [(j.indices, j.executor) for j in jobs] == [("0-3", "local")]
    assert ex.slurm_job_ids(Batch.load(batch.path)) == []


def test_local_job_ids_are_unique_within_one_second() -> None:
    ids = {ex.new_local_job_id() for _ in range(200)}
    assert len(ids) == 200 and all(i.startswith("local-") for i in ids)


def test_nothing_to_run(batch: Batch) -> None:
    for i in range(2):
        finished(batch, "regressor-wide", i)
    said: list[str] = []
    started = ex.start(batch, "local", ex.Selection.of(batch, ["regressor.wide"]),
                       say=said.append)
    assert started.jobs == [] and "nothing to run" in said[0]


def _retrain(batch: Batch) -> ex.Retrain:
    script = batch.path / "scripts" / "retrain-0123456789ab-1.sh"
    script.write_text(batch.script_path(batch.manifest.models[0]).read_text())
    return ex.Retrain(script, "regressor.narrow", 3, "0123456789ab" + "0" * 20)


def test_local_retrain_is_recorded_with_a_real_record_path(batch: Batch) -> None:
    r = _retrain(batch)
    started = ex.start(batch, "local", ex.Selection.retraining(r), say=lambda _: None)
    assert started.failures == 0
    [job] = ex.retrain_jobs(Batch.load(batch.path))
    assert (job.of, job.model, job.index, job.executor) == (r.run_id, "regressor.narrow", 3,
                                                             "local")
    key = Path(job.record).stem
    assert job.record == f"records/retrain/{key}.json" and key.startswith("0123456789ab-")
    # the task was told the key: it writes its record exactly there
    assert f"key={key}" in started.logs[0].read_text()


def test_slurm_retrain_is_recorded_and_cancellable(batch: Batch) -> None:
    batch = on_server(batch)
    r = _retrain(batch)
    runner = Sbatch()
    started = ex.start(batch, "slurm", ex.Selection.retraining(r), say=lambda _: None,
                       runner=runner)
    [call] = [c for c in runner.calls if c[0] == "sbatch"]
    assert call[2] == "--array=3" and "NETRAIN_RETRAIN_KEY=0123456789ab-" in call[3]
    again = Batch.load(batch.path)
    [job] = ex.retrain_jobs(again)
    assert job.job_id == started.jobs[0].job_id and job.executor == "slurm"
    assert ex.slurm_job_ids(again) == [job.job_id]
    assert ex.slurm_job_ids(again, ["regressor.wide"]) == []
    assert ex.has_slurm_jobs(again)


def test_scheduler_view_reports_retrain_jobs(batch: Batch) -> None:
    ex.start(batch, "slurm", ex.Selection.retraining(_retrain(batch)), say=lambda _: None,
             runner=Sbatch())
    b = Batch.load(batch.path)
    [job] = ex.retrain_jobs(b)

    def runner(argv: Sequence[str]) -> Result:
        if argv[0] == "sacct":
            return Result(0, f"{job.job_id}_3|TIMEOUT\n", "")
        return Result(0, "", "")

    view = ex.scheduler_view([b], runner)
    assert view.retrains == {b.id: {job.job_id: "TIMEOUT"}}
    assert view.tasks == {}  # a retrain's state never stands for the model's task 3
