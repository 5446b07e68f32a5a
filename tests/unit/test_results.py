"""Reading a batch's results from its files: metrics CSVs, ranking, default directions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from netrain.define.provenance import experiment_tags, git_state, keras_backend, versions
from netrain.errors import NetrainError
from netrain.results.networks import Network, best, default_mode, read_history


def _net(model: str, i: int, final: dict[str, float], state: str = "finished") -> Network:
    return Network(model=model, task=0, net=i, run_id=f"{i:032x}", name=model, stem=f"s{i}",
                   state=state, epochs=3, final=final, weights="", arch="", metrics_csv="")


def test_read_history(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("epoch,loss,val_loss\n0,1.5,2.0\n1,1.0,\n")
    h = read_history(p)
    assert h["loss"] == [1.5, 1.0] and h["val_loss"][0] == 2.0 and math.isnan(h["val_loss"][1])
    assert read_history(tmp_path / "missing.csv") == {}
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00")
    assert read_history(tmp_path / "bin.csv") == {}


def test_best_ranks_skips_unfinished_and_nan() -> None:
    nets = [_net("a.x", 0, {"val_loss": 0.5}), _net("a.x", 1, {"val_loss": 0.2}),
            _net("b.y", 2, {"val_loss": 0.1}, state="failed"),
            _net("b.y", 3, {"val_loss": float("nan")}), _net("b.y", 4, {"val_loss": 0.9})]
    assert [n.net for n in best(nets, "val_loss")] == [1, 0, 4]
    assert [n.net for n in best(nets, "val_loss", "max", top=1)] == [4]
    assert [n.net for n in best(nets, "val_loss", top=1, models=True)] == [1, 4]
    with pytest.raises(NetrainError, match="metrics are val_loss"):
        best(nets, "accuracy")


def test_default_mode() -> None:
    assert default_mode("val_accuracy") == "max" and default_mode("val_loss") == "min"
    assert default_mode("mae") == "min" and default_mode("auc") == "max"


def test_versions_and_git_without_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert keras_backend() == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    v = versions()
    assert v["keras_backend"] == "tensorflow" and v["python"].count(".") == 2
    assert "keras" in v and "mlflow" in v
    assert git_state(tmp_path) == {}
    tags = experiment_tags({"keras": "3.1"}, {"commit": "abc", "dirty": True})
    assert tags == {"netrain.version.keras": "3.1", "netrain.git.commit": "abc",
                    "netrain.git.dirty": "true"}
