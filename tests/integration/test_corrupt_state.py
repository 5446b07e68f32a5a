"""State files cut short or corrupted (a task record, batch.yaml, a journal line): one line
names the file, show and sync go on, and what a resume needs comes from the file's copy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import invoke, make_userproj, mlflow_client

pytestmark = pytest.mark.slow
SLUG = "regressor-wide"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A project with two batches: one finished task of two networks (3 epochs), not yet
    shipped to MLflow, and an empty second batch."""
    userproj = make_userproj(tmp_path_factory.mktemp("corrupt") / "userproj")
    r = invoke("generate", "--models", "regressor.wide=2", "--array", "1", "--nb-epoch", "3",
               "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    r = invoke("generate", "--models", "regressor.wide=1", "--array", "1", "--nb-epoch", "1",
               "--epoch-samples", "64", "--no-check", cwd=userproj)
    assert r.code == 0, r.text
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local",
               NETRAIN_SHIPPER="off", NETRAIN_LOG=str(batch / "logs" / "task.log"))
    subprocess.run(["bash", str(batch / "scripts" / f"{SLUG}-sbatch.sh")], env=env, check=True,
                   capture_output=True, timeout=300)  # its journal left for netrain sync
    return userproj, batch


def _show(userproj: Path, *args: str) -> tuple[dict, str]:
    r = invoke("show", *args, "--json", cwd=userproj)
    assert r.code == 0, r.text
    return json.loads(r.out), r.err


def test_a_record_cut_short_is_named_and_read_from_its_copy(
        finished: tuple[Path, Path]) -> None:
    userproj, batch = finished
    record = batch / "records" / SLUG / "0.json"
    whole = record.read_text()
    record.write_text(whole[:100])
    try:
        data, err = _show(userproj, batch.name)
        task = data["models"][0]["tasks"][0]
        assert task["state"] == "finished" and task["finished"] == 2, task
        assert f"netrain: warning: task record {record} is unreadable" in err, err
        assert "using its copy .0.json.bak" in err
        r = invoke("run", batch.name, cwd=userproj)  # nothing trained twice
        assert r.code == 0 and "nothing to run" in r.err, r.text
    finally:
        record.write_text(whole)


def test_a_truncated_batch_yaml_is_named_and_read_from_its_copy(
        finished: tuple[Path, Path]) -> None:
    userproj, batch = finished
    manifest = batch / "batch.yaml"
    whole = manifest.read_text()
    manifest.write_text(whole[:len(whole) // 3])
    try:
        data, err = _show(userproj)
        assert [b["id"] for b in data] == sorted(p.name for p in batch.parent.iterdir()
                                                 if not p.name.startswith(".")), data
        assert f"netrain: warning: {manifest} is unreadable: using its copy .batch.yaml.bak" \
            in err, err
        r = invoke("run", batch.name, cwd=userproj)
        assert r.code == 0 and "nothing to run" in r.err, r.text
    finally:
        manifest.write_text(whole)


def test_a_garbage_line_in_a_journal_is_named_and_the_rest_shipped(
        finished: tuple[Path, Path]) -> None:
    userproj, batch = finished
    journal = batch / "journal" / SLUG / "0.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    journal.write_text("".join(lines[:middle]) + "\x00\x00garbage{\n" + "".join(lines[middle:]))
    r = invoke("sync", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    assert f"{batch.name} journal/{SLUG}/0.jsonl: " in r.out and \
        "1 unreadable lines skipped" in r.out, r.text
    c = mlflow_client("sqlite:///" + str(userproj / "tracking" / "custom.db"))
    exp = c.get_experiment_by_name(batch.name)
    nets = [x for x in c.search_runs([exp.experiment_id]) if "net_index" in x.data.tags]
    assert len(nets) == 2 and {x.info.status for x in nets} == {"FINISHED"}
    for run in nets:
        assert [m.step for m in c.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
