"""A batch made by netrain before the layout by stage (tests/fixtures/batch-v0: its scripts
run ``-m netrain.launch``, its entry point imports ``netrain.task``) trains and ships under
today's netrain."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from tests.conftest import FIXTURES, mlflow_client, run_cli

MADE_AT = "/tmp/netrain-v0/proj"
MADE_WITH = "/work/main/.venv/bin"


def test_a_batch_made_before_the_layout_move_still_runs(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(FIXTURES / "batch-v0", proj)
    for f in proj.rglob("*"):
        if f.is_file() and f.suffix in ("", ".sh", ".yaml", ".py"):
            text = f.read_text(encoding="utf-8")
            here = str(Path(sys.executable).parent)
            new = text.replace(MADE_AT, str(proj)).replace(MADE_WITH, here)
            if new != text:
                f.write_text(new, encoding="utf-8")
    batch = next((proj / "runs").iterdir())
    script = (batch / "scripts" / "reg-narrow-sbatch.sh").read_text()
    assert "-m netrain.launch " in script  # the old module path, as on users' disks
    assert "from netrain.task import run_entry" in (batch / "mlproject" / "entry.py").read_text()
    manifest = yaml.safe_load((batch / "batch.yaml").read_text())
    # the tracking store is not part of the fixture: a fresh one, with the batch's experiment
    # created as generate created it (the first experiment of a fresh store)
    client = mlflow_client(manifest["tracking"]["uri"])
    exp = client.create_experiment(batch.name, manifest["tracking"]["artifact_location"])
    assert exp == manifest["tracking"]["experiment_id"]

    r = run_cli("run", batch.name, "-j", "1", cwd=proj)
    assert r.code == 0, r.text
    r = run_cli("sync", batch.name, cwd=proj)
    assert r.code == 0, r.text
    r = run_cli("show", batch.name, "--json", "--no-scheduler", cwd=proj)
    assert r.code == 0, r.text
    runs = client.search_runs([exp], max_results=100)
    nets = [x for x in runs if x.data.tags.get("net_index") is not None]
    assert len(nets) == 4 and {x.info.status for x in nets} == {"FINISHED"}
    assert len(list((batch / "weights").glob("*.weights.h5"))) == 4
