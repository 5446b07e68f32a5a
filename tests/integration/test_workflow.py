"""The whole workflow through the CLI: init, generate, run locally, MLflow, show, add,
retrain, note. One batch is trained once per module; each test starts from that trained
state, restored before it, so the tests neither see each other's changes nor depend on their
order. Commands that start training tasks (run, add --run, retrain) run as the real console
script; the others in this process (CliRunner)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from tests.conftest import invoke, mlflow_client, run_cli, snapshot_tree

pytestmark = pytest.mark.slow

MODELS = "classifier.clu_one=2, chransynth=2, autoencoder.classical=2"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo project with its batch trained, and a pristine copy of it that no test
    touches."""
    proj = tmp_path_factory.mktemp("demo")
    r = invoke("init", str(proj), cwd=proj.parent)
    assert r.code == 0, r.text
    r = invoke("generate", "--models", MODELS, "--array", "2", "--nb-epoch", "2",
                "--epoch-samples", "300", "--desc", "demo batch $(touch pwned)", cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    # tasks ending within NETRAIN_SHIP_AFTER leave shipping to `netrain run` (its one
    # MLflow client): make every task one of those, however loaded the machine is
    run = run_cli("run", batch.name, cwd=proj, env={"NETRAIN_SHIP_AFTER": "600"})
    pristine = tmp_path_factory.mktemp("pristine") / "demo"
    shutil.copytree(proj, pristine, symlinks=True)
    return {"proj": proj, "batch": batch, "run": run, "pristine": pristine,
            "uri": f"sqlite:///{proj / 'trainings' / 'mlflow.db'}"}


@pytest.fixture
def demo(trained: dict) -> dict:
    """The trained demo project as the module's run left it, whatever an earlier test did
    to it. It is restored in place: the batch's scripts, manifest and MLflow runs name its
    absolute paths, so a copy elsewhere would still train into the original."""
    restore(trained["pristine"], trained["proj"])
    return trained


def restore(pristine: Path, proj: Path) -> None:
    """Make ``proj`` the same as ``pristine`` again. The MLflow database is copied with
    SQLite's backup API, into the file this process may hold open (MLflow keeps one engine
    per URI for the process): replacing the file would leave those connections on the old
    one."""
    db = Path("trainings") / "mlflow.db"
    for p in sorted(proj.rglob("*"), reverse=True):  # children before their folders
        if p == proj / db or p in (proj / db).parents:
            continue
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    shutil.copytree(pristine, proj, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda d, names: ["mlflow.db"] if Path(d) == pristine / db.parent
                    else [])
    with closing(sqlite3.connect(pristine / db)) as src, closing(sqlite3.connect(proj / db)) as dst:
        src.backup(dst)


def test_run_succeeds_and_layout(demo: dict) -> None:
    assert demo["run"].code == 0, demo["run"].text
    assert "6 ok, 0 failed" in demo["run"].err
    b: Path = demo["batch"]
    for name in ("batch.yaml", "MLproject", "conda.yaml", "runbatch.sh", "mlproject/entry.py",
                 "code/netrain_main.py", "code/models.py"):
        assert (b / name).is_file(), name
    for slug in ("classifier-clu_one", "classifier-chransynth", "autoencoder-classical"):
        assert (b / "scripts" / f"{slug}-sbatch.sh").is_file()
    assert len(list((b / "weights").glob("*.weights.h5"))) == 12
    assert len(list((b / "archs").glob("*.json"))) == 12
    assert len(list((b / "metrics").glob("*.csv"))) == 12
    assert not (demo["proj"] / "pwned").exists()
    # tasks this short leave their journal to `netrain run`, which ships them all with one
    # MLflow client (test_mlflow_experiment_and_runs finds every run FINISHED)
    log = (b / "logs" / "classifier-clu_one_local_0.log").read_text()
    assert "its journal is shipped after it" in log, log
    manifest = yaml.safe_load((b / "batch.yaml").read_text())
    assert manifest["description"] == "demo batch $(touch pwned)"
    assert [m["class"] + "." + m["architecture"] for m in manifest["models"]] == [
        "classifier.clu_one", "classifier.chransynth", "autoencoder.classical"]


def test_mlflow_experiment_and_runs(demo: dict) -> None:
    c = mlflow_client(demo["uri"])
    b: Path = demo["batch"]
    exps = [e for e in c.search_experiments() if e.name != "Default"]
    assert [e.name for e in exps] == [b.name]
    assert exps[0].tags["mlflow.note.content"] == "demo batch $(touch pwned)"
    runs = c.search_runs([exps[0].experiment_id], max_results=1000)
    nets = [r for r in runs if "net_index" in r.data.tags]
    tasks = [r for r in runs if "net_index" not in r.data.tags]
    assert len(nets) == 12 and len(tasks) == 6
    task_ids = {r.info.run_id for r in tasks}
    seen = set()
    for r in nets:
        t = r.data.tags
        assert r.info.status == "FINISHED"
        assert t["batch"] == b.name
        assert t["mlflow.parentRunId"] in task_ids
        seen.add((t["class"], t["architecture"], t["array_index"], t["net_index"]))
        p = r.data.params
        assert p["nb_epoch"] == "2" and p["epoch_samples"] == "300"
        assert p["optimizer"] == "adam" and p["trainingrun"] == t["array_index"]
        hist = c.get_metric_history(r.info.run_id, "loss")
        assert [m.step for m in hist] == [0, 1]
        arts = {a.path for d in ("weights", "archs", "metrics")
                for a in c.list_artifacts(r.info.run_id, d)}
        assert any(a.endswith(".weights.h5") for a in arts)
        assert any(a.endswith(".json") for a in arts) and any(a.endswith(".csv") for a in arts)
    assert len(seen) == 12
    for r in tasks:
        assert r.info.status == "FINISHED"
        assert {"batch", "class", "architecture", "array_index"} <= set(r.data.tags)
        assert [a.path for a in c.list_artifacts(r.info.run_id, "logs")]


def test_show_reports_finished(demo: dict) -> None:
    r = invoke("show", cwd=demo["proj"])
    assert r.code == 0, r.text
    line = next(ln for ln in r.out.splitlines() if ln.startswith(demo["batch"].name))
    assert "(+1)" in line  # the MODELS column counts what does not fit
    assert re.search(r"\s12\s+12\s+0\s+0\s", line), line
    r = invoke("show", demo["batch"].name[:15], "--json", cwd=demo["proj"])
    data = json.loads(r.out)
    assert data["finished"] == 12 and data["failed"] == 0
    states = {t["state"] for m in data["models"] for t in m["tasks"]}
    assert states == {"finished"}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_add_networks_and_model(demo: dict) -> None:
    b: Path = demo["batch"]
    before = {p.name: _digest(p) for p in (b / "weights").iterdir()}
    r = invoke("add", b.name, "--models", "classifier.missing_arch=1", cwd=demo["proj"])
    assert r.code == 1 and "missing_arch" in r.err, r.text
    r = invoke("add", b.name, "--models", "classifier.clu_one=1", "--array", "1",
                "--nb-epoch", "1", "--epoch-samples", "100", cwd=demo["proj"])
    assert r.code == 0, r.text
    script = (b / "scripts" / "classifier-clu_one-sbatch.sh").read_text()
    assert "#SBATCH --array=0-2" in script
    assert '"$index" -ge 2 ] && [ "$index" -lt 3 ]; then nnets=1; nb_epoch=1' in script
    r = run_cli("run", b.name, cwd=demo["proj"])
    assert r.code == 0 and "1 ok, 0 failed" in r.err, r.text
    after = {p.name: _digest(p) for p in (b / "weights").iterdir()}
    assert {k: after[k] for k in before} == before
    assert len(after) == 13


def test_retrain_creates_tagged_run(demo: dict) -> None:
    c = mlflow_client(demo["uri"])
    exp = c.get_experiment_by_name(demo["batch"].name)
    net = next(r for r in c.search_runs([exp.experiment_id], max_results=1000)
               if r.data.tags.get("net_index") == "1" and r.data.tags["array_index"] == "1"
               and r.data.tags["architecture"] == "clu_one")
    weights = sorted((demo["batch"] / "weights").glob("*_t1_n1.weights.h5"))
    before = {p: _digest(p) for p in weights}
    r = run_cli("retrain", net.info.run_id, "--from-weights", "--nb-epoch", "1",
                cwd=demo["proj"])
    assert r.code == 0, r.text
    new = c.search_runs([exp.experiment_id], f"tags.retrain_of = '{net.info.run_id}'")
    children = [x for x in new if "net_index" in x.data.tags]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert children[0].data.tags["net_index"] == "1"
    assert {p: _digest(p) for p in weights} == before
    assert len(list((demo["batch"] / "weights").glob("*retrain-*.weights.h5"))) == 1
    r = invoke("show", demo["batch"].name, cwd=demo["proj"])
    assert "retrains:" in r.out and net.info.run_id[:12] in r.out


def test_note_on_batch_and_run(demo: dict) -> None:
    c = mlflow_client(demo["uri"])
    b: Path = demo["batch"]
    r = invoke("note", b.name, "learning rate too high", cwd=demo["proj"])
    assert r.code == 0, r.text
    exp = c.get_experiment_by_name(b.name)
    assert "learning rate too high" in exp.tags["mlflow.note.content"]
    run = c.search_runs([exp.experiment_id], "tags.net_index = '0'", max_results=1)[0]
    r = invoke("note", run.info.run_id, "best so far", cwd=demo["proj"])
    assert r.code == 0, r.text
    assert c.get_run(run.info.run_id).data.tags["mlflow.note.content"] == "best so far"
    notes = yaml.safe_load((b / "batch.yaml").read_text())["notes"]
    assert [n["text"] for n in notes] == ["learning rate too high", "best so far"]


def test_generate_missing_loss_writes_nothing(userproj: Path) -> None:
    before = snapshot_tree(userproj)
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "2", cwd=userproj,
                env={"USERPROJ_OMIT": "loss"})
    assert r.code == 1, r.text
    assert "'loss'" in r.err and "regressor.narrow" in r.err
    assert "Traceback" not in r.text and len(r.err.strip().splitlines()) == 1
    assert snapshot_tree(userproj) == before
    assert not (userproj / "tracking" / "custom.db").exists()
