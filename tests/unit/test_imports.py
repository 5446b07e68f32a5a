"""The library's pure modules must not pull in TensorFlow, Keras or MLflow (checked in a
fresh interpreter, so other tests' imports cannot hide a regression)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "mlflow")
PURE = ("netrain", "netrain.spec", "netrain.contract", "netrain.config", "netrain.render",
        "netrain.slurm", "netrain.status", "netrain.batch", "netrain.records",
        "netrain.builder", "netrain.report", "netrain.executor", "netrain.heal",
        "netrain.params", "netrain.mlflow_store", "netrain.lookup", "netrain.cli",
        "netrain.journal", "netrain.shipper", "netrain.mlflow_ship", "netrain.launch",
        "netrain.sync", "netrain.server", "netrain.check", "netrain.nodeprobe")


def test_pure_modules_import_no_heavy_package() -> None:
    code = (f"import importlib, sys\nfor n in {PURE!r}: importlib.import_module(n)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
