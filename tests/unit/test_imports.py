"""The library's pure modules must not pull in TensorFlow, Keras or MLflow."""

from __future__ import annotations

import importlib
import sys

import pytest

HEAVY = ("tensorflow", "keras", "mlflow")
PURE = ("netrain", "netrain.spec", "netrain.contract", "netrain.config", "netrain.render",
        "netrain.slurm", "netrain.status", "netrain.batch", "netrain.records",
        "netrain.builder")


def test_pure_modules_import_no_heavy_package() -> None:
    already = [m for m in HEAVY if m in sys.modules]
    if already:
        pytest.skip(f"{already} imported by other tests in this session")
    for name in PURE:
        importlib.import_module(name)
    assert [m for m in sys.modules if m.split(".")[0] in HEAVY] == []
