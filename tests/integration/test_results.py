"""Results through the real CLI on one small trained batch: report (figures, table, HTML,
logged to MLflow), best and --register (loaded back with mlflow.pyfunc), describe, retrain
reproducibility, provenance at generate, and `netrain ui`."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import invoke, mlflow_client, run_cli
from tests.integration.browser import browser, free_port, wait

pytestmark = pytest.mark.slow

MODELS = "classifier.clu_one=2, autoencoder.classical=2"
PNG = b"\x89PNG\r\n\x1a\n"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    proj = tmp_path_factory.mktemp("results") / "proj"
    r = invoke("init", str(proj), cwd=proj.parent)
    assert r.code == 0, r.text
    _git(proj, "init", "-q", "-b", "main")
    _git(proj, "add", "-A")
    _git(proj, "commit", "-qm", "models")
    r = invoke("generate", "--models", MODELS, "--array", "1", "--nb-epoch", "2",
                "--epoch-samples", "200", "--desc", "results test", "--run", cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    return {"proj": proj, "batch": batch, "uri": f"sqlite:///{proj / 'trainings' / 'mlflow.db'}"}


def _nets(trained: dict) -> list:
    c = mlflow_client(trained["uri"])
    exp = c.get_experiment_by_name(trained["batch"].name)
    return [r for r in c.search_runs([exp.experiment_id], max_results=1000)
            if "net_index" in r.data.tags]


def test_generate_records_versions_and_git(trained: dict) -> None:
    b: Path = trained["batch"]
    m = yaml.safe_load((b / "batch.yaml").read_text())
    v = m["versions"]
    assert {"python", "numpy", "keras", "mlflow", "keras_backend"} <= set(v)
    assert v["keras_backend"] == "tensorflow" and any(k.startswith("tensorflow") for k in v)
    assert re.fullmatch(r"\d+\.\d+.*", v["keras"]), v
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=trained["proj"],
                          capture_output=True, text=True).stdout.strip()
    # the trainings dir inside the checkout does not make the code dirty
    assert m["code"]["git"] == {"commit": head, "branch": "main", "dirty": False}
    assert m["code"]["git_commit"] == head  # the one-line form agrees (it said +dirty)
    exp = mlflow_client(trained["uri"]).get_experiment_by_name(b.name)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["netrain.git.commit"] == head and exp.tags["netrain.git.dirty"] == "false"
    assert exp.tags["netrain.version.keras"] == v["keras"]


def test_report_files_html_and_mlflow(trained: dict, tmp_path: Path) -> None:
    b: Path = trained["batch"]
    out = tmp_path / "rep"
    r = invoke("report", b.name, "--out", str(out), cwd=trained["proj"])
    assert r.code == 0, r.text
    assert r.out.strip() == str(out / "report.html")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["curves-autoencoder-classical.png", "curves-classifier-clu_one.png",
                    "final-metrics.png"]
    for p in out.glob("*.png"):
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 5000
    page = (out / "report.html").read_text()
    inlined = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(inlined) == 3 and all(base64.b64decode(x).startswith(PNG) for x in inlined)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the page
    rows = list(csv.DictReader((out / "best.csv").open()))
    assert {r["model"] for r in rows} == {"classifier.clu_one", "autoencoder.classical"}
    assert len(rows) == 4 and all(r["metric"] == "val_loss" for r in rows)
    for model in ("classifier.clu_one", "autoencoder.classical"):
        vals = [float(r["value"]) for r in rows if r["model"] == model]
        assert vals == sorted(vals)
    run_ids = {x.info.run_id for x in _nets(trained)}
    for row in rows:
        assert row["run_id"] in run_ids and Path(row["weights"]).is_file()
        assert row["run_id"] in page and row["weights"] in page
    c = mlflow_client(trained["uri"])
    exp = c.get_experiment_by_name(b.name)
    reports = c.search_runs([exp.experiment_id], "tags.`netrain.kind` = 'report'")
    assert len(reports) == 1 and reports[0].info.run_name == "report"
    assert {a.path for a in c.list_artifacts(reports[0].info.run_id)} >= {
        "report.html", "best.csv", "final-metrics.png"}
    # a second report reuses the run
    r = invoke("report", b.name, "--out", str(out), cwd=trained["proj"])
    assert r.code == 0, r.text
    assert len(c.search_runs([exp.experiment_id], "tags.`netrain.kind` = 'report'")) == 1


def test_report_with_tracking_down(trained: dict, tmp_path: Path) -> None:
    """The report reads only the batch's files: a dead tracking server costs a warning."""
    copy = tmp_path / trained["batch"].name
    shutil.copytree(trained["batch"], copy, symlinks=True)
    m = yaml.safe_load((copy / "batch.yaml").read_text())
    m["tracking"]["uri"] = "http://127.0.0.1:9"
    (copy / "batch.yaml").write_text(yaml.safe_dump(m))
    r = invoke("report", str(copy), cwd=tmp_path)
    assert r.code == 0, r.text
    assert "not logged to MLflow" in r.err and "127.0.0.1:9" in r.err
    assert (copy / "report" / "report.html").is_file()
    assert len(list((copy / "report").glob("*.png"))) == 3


def test_best_ranks_and_errors(trained: dict) -> None:
    b, proj = trained["batch"], trained["proj"]
    r = invoke("best", b.name, "--json", "--top", "10", cwd=proj)
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert len(data["best"]) == 4 and data["mode"] == "min"
    by_model: dict[str, list[float]] = {}
    for n in data["best"]:
        by_model.setdefault(n["model"], []).append(n["value"])
    assert len(by_model) == 2 and all(v == sorted(v) for v in by_model.values())
    assert [n["model"] for n in data["best"]] == sorted(n["model"] for n in data["best"])
    r = invoke("best", b.name, "--json", "--top", "3", "--across-models", cwd=proj)
    vals = [n["value"] for n in json.loads(r.out)["best"]]
    assert len(vals) == 3 and vals == sorted(vals)
    r = invoke("best", b.name, "--json", "--top", "1", cwd=proj)
    assert len(json.loads(r.out)["best"]) == 2  # one per model
    r = invoke("best", b.name, "--json", "--mode", "max", "--metric", "loss", "--across-models",
               cwd=proj)
    vals = [n["value"] for n in json.loads(r.out)["best"]]
    assert vals == sorted(vals, reverse=True)
    r = invoke("best", b.name, "--model", "classifier.clu_one", "--metric", "val_accuracy",
                "--top", "1", "--json", cwd=proj)
    data = json.loads(r.out)
    assert data["mode"] == "max" and [n["model"] for n in data["best"]] == ["classifier.clu_one"]
    r = invoke("best", b.name, cwd=proj)
    assert r.code == 0 and r.out.splitlines()[0].split()[:5] == ["#", "MODEL", "TASK", "NET",
                                                                 "VAL_LOSS"], r.text
    r = invoke("best", b.name, "--metric", "val_los", cwd=proj)
    assert r.code == 1 and r.err.startswith("netrain: error: no finished network has the "
                                            "metric 'val_los'") and "val_loss" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = invoke("best", b.name, "--top", "0", cwd=proj)
    assert r.code == 2 and "--top" in r.err and "Traceback" not in r.err


def test_register_and_load_back(trained: dict) -> None:
    import keras
    import mlflow
    import numpy as np

    b, proj = trained["batch"], trained["proj"]
    r = invoke("best", b.name, "--model", "autoencoder.classical", "--register", "ae-best",
                "--json", cwd=proj)
    assert r.code == 0, r.text
    data = json.loads(r.out)
    reg, chosen = data["registered"], data["best"][0]
    assert reg["model_uri"] == "models:/ae-best/1" and reg["run_id"] == chosen["run_id"]
    c = mlflow_client(trained["uri"])
    assert c.get_run(chosen["run_id"]).info.status == "FINISHED"
    mv = c.get_model_version("ae-best", "1")
    assert mv.run_id == chosen["run_id"]
    saved = keras.models.model_from_json(Path(chosen["arch"]).read_text())
    saved.load_weights(chosen["weights"])
    x = np.random.default_rng(0).random((5, *saved.input_shape[1:])).astype("float32")
    mlflow.set_tracking_uri(trained["uri"])
    loaded = mlflow.pyfunc.load_model(reg["model_uri"])
    np.testing.assert_allclose(np.asarray(loaded.predict(x)), saved.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_describe_and_retrain_reproduces(trained: dict) -> None:
    proj = trained["proj"]
    net = next(r for r in _nets(trained) if r.data.tags["class"] == "classifier"
               and r.data.tags["net_index"] == "1")
    run_id = net.info.run_id
    r = run_cli("retrain", run_id, cwd=proj)
    assert r.code == 0, r.text
    c = mlflow_client(trained["uri"])
    again = [x for x in c.search_runs([net.info.experiment_id], f"tags.retrain_of = '{run_id}'")
             if "net_index" in x.data.tags]
    assert len(again) == 1 and again[0].info.status == "FINISHED"
    # same code, seed and data on CPU: the same final training loss, exactly
    assert again[0].data.metrics["loss"] == net.data.metrics["loss"]
    r = invoke("show", trained["batch"].name, cwd=proj)  # its run id, not a blank
    assert f"{again[0].info.run_id[:12]} finished" in r.out, r.out
    r = invoke("describe", run_id, "--json", cwd=proj)
    assert r.code == 0, r.text
    d = json.loads(r.out)
    assert d["kind"] == "network" and d["status"] == "FINISHED"
    assert d["batch"]["id"] == trained["batch"].name and d["model"] == "classifier.clu_one"
    assert (d["task"], d["net"]) == (0, 1) and d["seed"] == int(net.data.params["seed"])
    assert d["epochs"] == 2 and d["final_metrics"]["loss"] == net.data.metrics["loss"]
    assert d["code"]["digest"].startswith("sha256:") and d["code"]["git"]["branch"] == "main"
    assert d["versions"]["keras_backend"] == "tensorflow" and d["host"]
    assert all(f["exists"] for k, f in d["files"].items() if k != "artifacts")
    assert d["params"]["optimizer"] == "adam" and "wpath" not in d["params"]
    assert [x["run_id"] for x in d["lineage"]["retrains"]] == [again[0].info.run_id]
    assert d["lineage"]["retrain_requests"][0]["of"] == run_id
    r = invoke("describe", again[0].info.run_id, cwd=proj)
    assert r.code == 0, r.text
    assert f"retrain of {run_id}" in r.out and "versions   python" in r.out
    assert re.search(r"model\s+classifier.clu_one\s+task 0\s+net 1\s+seed \d+", r.out), r.out
    r = invoke("describe", "0" * 32, cwd=proj)
    assert r.code == 1 and r.err.startswith("netrain: error: no MLflow run"), r.text


# ----------------------------------------------------------------------- netrain ui, browser

@pytest.fixture(scope="module")
def ui(trained: dict):  # type: ignore[no-untyped-def]
    """`netrain ui BATCH` as a user starts it; yields the URL it printed."""
    import os
    import signal
    import time

    from tests.conftest import BIN

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NETRAIN_CONFIG"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    proc = subprocess.Popen([str(BIN / "netrain"), "ui", trained["batch"].name, "--port",
                             str(port)], cwd=trained["proj"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed once /health answers
        yield {"url": url, "port": port, "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        time.sleep(0.5)


def test_ui_serves_the_batch(trained: dict, ui: dict) -> None:
    import urllib.request

    exp = mlflow_client(trained["uri"]).get_experiment_by_name(trained["batch"].name)
    assert ui["url"] == (f"http://127.0.0.1:{ui['port']}/#/experiments/{exp.experiment_id}"
                         "/runs?workflowType=machine_learning&viewStateShareKey=netrain-tasks")
    with urllib.request.urlopen(f"http://127.0.0.1:{ui['port']}/health", timeout=10) as r:
        assert r.status == 200
    r = run_cli("ui", "--port", str(ui["port"]), cwd=trained["proj"])
    assert r.code == 1 and f"port {ui['port']} on 127.0.0.1 is in use" in r.err, r.text
    r = invoke("ui", "--print-only", cwd=trained["proj"])
    assert "--workers 1" in r.out and "--host 127.0.0.1" in r.out


EXPAND_ALL = """
for (const b of document.querySelectorAll("button[data-component-id*='runnamecellrenderer']")) {
  const p = b.querySelector("path");
  if (p && (p.getAttribute("d") || "").startsWith("M7.25 7.25V4.5")) b.click();
}"""


def test_browser_shows_networks_with_tags(trained: dict, ui: dict, tmp_path: Path) -> None:
    """Headless Chromium opens the batch from the URL `netrain ui` printed: the experiment
    opens on its runs table, which lists every network of a model under the batch, class and
    architecture tags; a network's page shows those tags. Saves a screenshot."""
    import os
    from urllib.parse import quote

    from selenium.webdriver.common.by import By

    b = trained["batch"].name
    nets = {r.info.run_id: r for r in _nets(trained) if r.data.tags["class"] == "classifier"
            and "retrain_of" not in r.data.tags}
    d = browser("2400,900")  # wide: the grid draws only the columns in sight
    try:
        d.get(ui["url"])
        wait(d, lambda d: "matching runs" in d.find_element(By.TAG_NAME, "body").text)
        assert "/runs" in d.current_url and "Token Usage" not in d.find_element(
            By.TAG_NAME, "body").text
        # the URL opens the batch's tasks, one row each, with their summary
        from tests.integration.test_ui_views import ROWS

        rows = {r["attributes.`Run Name`"].splitlines()[-1]: r for r in
                wait(d, lambda d: d.execute_script(ROWS))}
        # a retrain (test_retrain..., when it ran first) is a task of its own: its row too
        tasks = {k: v for k, v in rows.items() if " retrain of " not in k}
        assert set(tasks) == {"classifier-clu_one[0]", "autoencoder-classical[0]"}, rows
        for name, cells in tasks.items():
            assert cells["tags.`class`"] == name.split("-")[0], cells
            assert cells["tags.`array_index`"] == "0", cells
            assert float(cells["metrics.`networks_finished`"]) == 2, cells
        flt = (f"tags.batch = '{b}' and tags.class = 'classifier' and "
               "tags.architecture = 'clu_one' and tags.net_index LIKE '%'")
        d.get(ui["url"] + "&searchFilter=" + quote(flt))
        wait(d, lambda d: "matching runs" in d.find_element(By.TAG_NAME, "body").text)

        def network_rows(d):  # type: ignore[no-untyped-def]
            # Expand every collapsed task run (its button shows a plus): the networks are
            # nested under their task's run.
            d.execute_script(EXPAND_ALL)
            ids = {r.get_attribute("row-id") for r in d.find_elements(By.CSS_SELECTOR,
                                                                       "[role=row][row-id]")}
            return ids if set(nets) <= ids else False

        d.set_window_size(1400, 900)  # the screenshot's size
        ids = wait(d, network_rows)
        assert set(nets) <= ids and len(nets) == 2
        names = {r.info.run_name for r in nets.values()}  # told apart at a glance
        assert names == {"classifier-clu_one_t0_n0", "classifier-clu_one_t0_n1"}, names
        shot = Path(os.environ.get("NETRAIN_UI_SCREENSHOT") or tmp_path / "ui-runs.png")
        d.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(PNG)
        run_id = sorted(nets)[0]
        exp = nets[run_id].info.experiment_id
        d.get(f"http://127.0.0.1:{ui['port']}/#/experiments/{exp}/runs/{run_id}")
        wait(d, lambda d: "architecture" in d.find_element(By.TAG_NAME, "body").text)
        text = d.find_element(By.TAG_NAME, "body").text
        assert nets[run_id].info.run_name in text
        for key, value in (("batch", b), ("class", "classifier"), ("architecture", "clu_one")):
            assert re.search(rf"{key}\s*\n?:\s*{re.escape(value)}", text), (key, text[:2000])
    finally:
        d.quit()


def test_untrained_batch_and_bad_input(userproj: Path, tmp_path: Path) -> None:
    r = invoke("generate", "--models", "regressor.narrow=1", "--array", "1", "--no-check",
                cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    r = invoke("best", batch.name, cwd=userproj)
    assert r.code == 1 and r.err.startswith("netrain: error: batch ") and \
        "no finished network yet" in r.err, r.text
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = invoke("report", batch.name, "--out", str(a_file), cwd=userproj)
    assert r.code in (1, 2) and r.err.startswith("netrain: error:") and \
        "Traceback" not in r.err, r.text
    assert a_file.read_text() == "x"
    r = invoke("report", batch.name, "--no-mlflow", cwd=userproj)
    assert r.code == 0 and "no trained network yet" in r.err, r.text
    assert (batch / "report" / "report.html").is_file()
    r = invoke("report", "nosuchbatch", cwd=userproj)
    assert r.code == 1 and "no batch 'nosuchbatch'" in r.err, r.text
    r = invoke("describe", "not-a-run", cwd=userproj)
    assert r.code == 1 and "is not an MLflow run id" in r.err, r.text
    r = invoke("best", batch.name, "--model", "regressor.nope", cwd=userproj)
    assert r.code == 1 and "has no model regressor.nope" in r.err, r.text
