"""Shared fixtures of the unit tests: a clean environment, golden files, manifests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netrain.define.batch import Job, Manifest, ModelEntry, Segment

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
UPDATE_GOLDEN = os.environ.get("NETRAIN_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def _clean_netrain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's shell must not leak into the tests (config and URI overrides)."""
    for var in ("NETRAIN_CONFIG", "NETRAIN_TRAININGS_DIR", "NETRAIN_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """``golden(name, text)``: compare with tests/golden/<name>.

    NETRAIN_UPDATE_GOLDEN=1 rewrites the golden files instead (review the diff).
    """

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if UPDATE_GOLDEN:
            GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.is_file():
            pytest.fail(f"golden file {path} is missing: run with NETRAIN_UPDATE_GOLDEN=1")
        expected = path.read_text(encoding="utf-8")
        assert text == expected, (
            f"{name} differs from tests/golden/{name}; if the change is intended, "
            "regenerate with NETRAIN_UPDATE_GOLDEN=1 and review the diff"
        )

    return check


def _segment(start: int, count: int, nnets: int = 3) -> Segment:
    return Segment(start=start, count=count, nnets=nnets, nb_epoch=5, epoch_samples=100,
                   intelligent=False, added="2024-01-02T03:04:05+00:00")


@pytest.fixture
def make_manifest() -> Callable[..., Manifest]:
    """A factory of small, valid manifests; keyword arguments override fields."""

    def make(**overrides: Any) -> Manifest:
        models = [
            ModelEntry("classifier", "clu_one", segments=[_segment(0, 1500, 10)],
                       jobs=[Job("101", "0-1000", "slurm", "2024-01-02T03:04:05+00:00", 0),
                             Job("102", "1001-1499", "slurm", "2024-01-02T03:04:05+00:00",
                                 1001)]),
            ModelEntry("classifier", "chransynth", segments=[_segment(0, 4, 32),
                                                             _segment(4, 2, 16)]),
            ModelEntry("autoencoder", "classical", segments=[_segment(0, 10, 45)],
                       jobs=[Job("103", "0-9", "slurm", "2024-01-02T03:04:05+00:00", 0),
                             Job("local-1", "0-9", "local", "2024-01-02T03:04:05+00:00", 0)]),
        ]
        fields: dict[str, Any] = dict(
            id="20240102-030405-abcd",
            description="unit test batch",
            created="2024-01-02T03:04:05+00:00",
            netrain_version="0.1.0",
            gpu=False,
            main_script="netrain_main.py",
            code={"source": "/src", "files": 2, "digest": "sha256:00"},
            tracking={"uri": "sqlite:////t/mlflow.db", "experiment_id": "7"},
            environment={"kind": "python", "value": "/opt/venv/bin/python"},
            launcher="mlflow",
            slurm={"partition": "cpu", "max_running": 4, "extra": ["--exclusive"]},
            models=models,
            notes=[{"at": "2024-01-02", "text": "a note"}],
            retrains=[],
        )
        fields.update(overrides)
        return Manifest(**fields)

    return make
