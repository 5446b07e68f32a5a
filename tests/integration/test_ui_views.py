"""`netrain ui BATCH` on a batch bigger than mlflow ui's first page (12 tasks of 10 networks:
132 runs), in headless Chromium: every task is a row of the URL it prints, with its model,
array index, networks finished, best and median val_loss, without "Load more"; the second
URL lists the batch's 20 best networks, best first. The runs are journals written by the
real JournalWriter with the tags and summary metrics a training task gives them, shipped by
the real `sync_batch` into SQLite; the tasks view on a batch trained for real is checked in
test_results.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.browser import browser, free_port, wait
from tests.integration.shipping import make_batch, project

pytestmark = pytest.mark.slow

MODELS = [("classifier", "clu_one"), ("autoencoder", "classical")]
TASKS, NETS = 6, 10  # per model: 12 tasks, 120 networks


def _write_journals(batch: Path, exp_id: str) -> dict[str, Any]:
    """Each task's journal as TaskRunner writes it: the task run, its networks (one epoch of
    loss and val_loss each), the task's summary metrics, every run ended."""
    from netrain.execute.records import NetRecord, TaskRecord
    from netrain.track.journal import JournalWriter, journal_path
    from netrain.train.task import summary

    rnd = random.Random(19)
    tasks: dict[str, dict[str, Any]] = {}
    nets: dict[str, float] = {}
    for cls, arch in MODELS:
        slug = f"{cls}-{arch}"
        for t in range(TASKS):
            common = {"batch": batch.name, "class": cls, "architecture": arch,
                      "array_index": t, "executor": "local"}
            w = JournalWriter(journal_path(batch, slug, t), batch, flush_every=60)
            tk = f"{slug}/{t}"
            w.open_run(tk, parent=None, name=f"{slug}[{t}]", experiment_id=exp_id,
                       tags={**common, "netrain.attempt": 1})
            rec = TaskRecord(model=f"{cls}.{arch}", index=t)
            for n in range(NETS):
                nk, name = f"{tk}/{n}", f"{slug}_t{t}_n{n}"
                w.open_run(nk, parent=tk, name=name, experiment_id=exp_id,
                           tags={**common, "net_index": n, "name": name})
                val = rnd.random()
                w.log_metrics(nk, 0, {"loss": val + 0.5, "val_loss": val})
                w.set_tags(nk, {"epochs": 1, "netrain.state": "finished"})
                w.end_run(nk, "FINISHED")
                rec.nets[str(n)] = NetRecord(state="finished", final={"loss": val + 0.5,
                                                                      "val_loss": val})
                nets[name] = val
            w.log_metrics(tk, 0, summary(rec))
            w.end_run(tk, "FINISHED")
            w.close()
            tasks[f"{slug}[{t}]"] = {"class": cls, "architecture": arch, "array_index": t,
                                     **summary(rec)}
    return {"tasks": tasks, "nets": nets}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from netrain.track.sync import sync_batch

    root = tmp_path_factory.mktemp("uiviews")
    proj = project(root)
    uri = f"sqlite:///{proj / 'trainings' / 'mlflow.db'}"
    batch, exp_id = make_batch(proj / "trainings", uri)
    expected = _write_journals(batch, exp_id)
    lines: list[str] = []
    res = sync_batch(batch, uri, lines.append)
    assert res.shipped == 2 * TASKS and not res.incomplete and not res.busy, lines

    from tests.conftest import BIN

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NETRAIN_CONFIG"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    err = root / "ui.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen([str(BIN / "netrain"), "ui", batch.name, "--port", str(port)],
                                cwd=proj, env=env, text=True, stdout=subprocess.PIPE, stderr=fh)
    try:
        assert proc.stdout is not None
        tasks_url, best_url = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        # mlflow ui's messages, then netrain's line on what each URL shows (written just
        # after the URLs: wait for it)
        deadline = time.monotonic() + 30
        while "first URL" not in (note := err.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield {**expected, "tasks_url": tasks_url, "best_url": best_url, "note": note,
               "port": port, "exp": exp_id}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


#: Every cell of the rows mlflow ui has drawn, by run id then column id, in the rows' order.
ROWS = """const out = {};
for (const c of document.querySelectorAll('[role=row][row-id] [col-id]')) {
  const row = c.closest('[row-id]');
  const id = row.getAttribute('row-id');
  out[id] = out[id] || {index: Number(row.getAttribute('row-index'))};
  out[id][c.getAttribute('col-id')] = c.innerText;
}
return Object.values(out).sort((a, b) => a.index - b.index);"""


def _rows(driver: Any, count: int) -> list[dict[str, str]]:
    """The table's rows once ``count`` of them are drawn."""
    from selenium.webdriver.common.by import By

    def drawn(d: Any) -> Any:
        if "matching runs" not in d.find_element(By.TAG_NAME, "body").text:
            return False
        rows = d.execute_script(ROWS)
        return rows if len(rows) >= count else False

    return wait(driver, drawn)  # type: ignore[no-any-return]


def _name(row: dict[str, str]) -> str:
    return row["attributes.`Run Name`"].splitlines()[-1]


def test_every_task_is_a_row_and_the_best_networks_a_click_away(big: Any) -> None:
    from selenium.webdriver.common.by import By

    exp = big["exp"]
    assert big["tasks_url"] == (f"http://127.0.0.1:{big['port']}/#/experiments/{exp}/runs?"
                                "workflowType=machine_learning&viewStateShareKey=netrain-tasks")
    assert big["best_url"].endswith("viewStateShareKey=netrain-best-val_loss-min")
    assert "its 20 best networks by val_loss" in big["note"], big["note"]
    d = browser("2400,1600")  # every column and row drawn (the grid draws what is seen)
    try:
        d.get(big["tasks_url"])
        rows = _rows(d, len(big["tasks"]))
        got = {_name(r): r for r in rows}
        assert set(got) == set(big["tasks"]), sorted(got)
        for name, want in big["tasks"].items():
            cells = got[name]
            assert cells["tags.`class`"] == want["class"], (name, cells)
            assert cells["tags.`architecture`"] == want["architecture"], (name, cells)
            assert cells["tags.`array_index`"] == str(want["array_index"]), (name, cells)
            assert float(cells["metrics.`networks_finished`"]) == NETS, (name, cells)
            for m in ("best_val_loss", "median_val_loss"):
                assert float(cells[f"metrics.`{m}`"]) == pytest.approx(want[m]), (name, m)
        body = d.find_element(By.TAG_NAME, "body").text
        assert "Load more" not in body and f"{len(big['tasks'])} matching runs" in body
        # a task's row leads to its networks: its run's page lists them
        d.find_element(By.LINK_TEXT, "autoencoder-classical[3]").click()
        nets = {f"autoencoder-classical_t3_n{n}" for n in range(NETS)}
        wait(d, lambda d: "Child runs" in d.find_element(By.TAG_NAME, "body").text)
        links = {a.text.strip(", ") for a in d.find_elements(By.TAG_NAME, "a")}
        assert nets <= links, sorted(links)

        d.get(big["best_url"])
        best = sorted(big["nets"], key=big["nets"].__getitem__)[:20]
        rows = _rows(d, 20)
        assert [_name(r) for r in rows] == best
        assert [float(r["metrics.`val_loss`"]) for r in rows] == \
            pytest.approx([big["nets"][n] for n in best])
        body = d.find_element(By.TAG_NAME, "body").text
        assert "Load more" not in body and "20 matching runs" in body
    finally:
        d.quit()
