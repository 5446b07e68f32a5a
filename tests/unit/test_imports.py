"""The library's pure modules must not pull in TensorFlow, Keras or MLflow (checked in a
fresh interpreter, so other tests' imports cannot hide a regression)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "mlflow")
PURE = ("netrain", "netrain.define.spec", "netrain.define.contract", "netrain.define.config",
        "netrain.define.scripts", "netrain.execute.slurm", "netrain.execute.status",
        "netrain.define.batch", "netrain.execute.records", "netrain.define.builder",
        "netrain.results.show", "netrain.execute.executor", "netrain.execute.heal",
        "netrain.define.params", "netrain.track.mlflow_store", "netrain.results.lookup",
        "netrain.cli", "netrain.track.journal", "netrain.track.shipper",
        "netrain.track.mlflow_ship", "netrain.execute.launcher", "netrain.track.sync",
        "netrain.track.server", "netrain.execute.check",
        "netrain.execute.nodeprobe")


def test_pure_modules_import_no_heavy_package() -> None:
    code = (f"import importlib, sys\nfor n in {PURE!r}: importlib.import_module(n)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
