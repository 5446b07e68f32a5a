"""Checkpoints and resume of packed training: a packed group stopped by a signal mid-epoch
writes each network's checkpoint (the sequential format) at its last completed epoch, and
resumed, packed or one by one, ends where the uninterrupted group ends; a real task process
signalled mid-training resumes its packed networks in the same MLflow runs."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netrain.define import checkpoint
from netrain.define.contract import validate_output
from netrain.errors import TaskInterrupted, note_interrupt
from netrain.train.sequential import NetworkJob
from tests.conftest import invoke, make_userproj, mlflow_client, run_cli
from tests.integration.test_packed import Recorder, data, mlp

pytestmark = pytest.mark.slow

LRS = (0.05, 0.003, 0.01)
EPOCHS = 8


class Stops(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.interrupted: dict[int, int] = {}

    def network_interrupted(self, job: NetworkJob) -> None:
        self.interrupted[job.net_index] = job.checkpoint_epoch


def dropout_mlp() -> Any:
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dropout(0.3), keras.layers.Dense(1)])


def _job(batch: Path, i: int, intelligent: bool, resume: bool = False,
         gen: Any = mlp) -> NetworkJob:
    import keras

    # intelligent: the first network reaches the loss threshold within a few epochs and is
    # frozen; the others never improve by min_delta, so patience stops them at epoch 4 (their
    # waiting epochs survive the stop) and their best weights are restored at the end
    es = {"monitor": "loss", "threshold": 0.45, "patience": 4, "min_delta": 100.0}
    out = {"name": f"n{i}", "nb_epoch": EPOCHS, "wpath": str(batch / "w"),
           "archpath": str(batch / "a"), "metricspath": str(batch / "m"),
           "model_generator": gen, "training_generator": data(),
           "evaluation_generator": data(32, seed=9), "optimizer": keras.optimizers.Adam(LRS[i]),
           "loss": "mse", "metrics": ["mae"], "batch_size": 16,
           "early_stopping": es if intelligent else {}}
    cfg = validate_output(out, "t.packed")
    stem, key = f"n_t0_n{i}", f"t-packed/0/n{i}"
    return NetworkJob(i, "t.packed", cfg, 1000 + i, stem, 0, intelligent, key=key,
                      batch_dir=batch, policy=checkpoint.Policy(every_epochs=2),
                      resume=checkpoint.read(batch, stem, key) if resume else None)


def _weights(job: NetworkJob, gen: Any = mlp) -> list[np.ndarray]:
    import keras

    keras.backend.clear_session()
    model = gen()
    model.load_weights(str(job.weights_path))
    return [np.asarray(w) for w in model.get_weights()]


def _signal_in_epoch(monkeypatch: Any, epoch: int, nets: int) -> None:
    """The task's handler noting a signal while epoch ``epoch`` starts (its batch order drawn:
    the group's state already copied, no step of it trained)."""
    from netrain.train import packed

    draws = [0]
    real = packed.epoch_order

    def order(rng: Any, n: int, epoch_samples: int) -> Any:
        draws[0] += 1
        if draws[0] == epoch * nets + 1:
            note_interrupt(signal.SIGTERM)
        return real(rng, n, epoch_samples)

    monkeypatch.setattr(packed, "epoch_order", order)


@pytest.mark.parametrize("intelligent, copy", [
    pytest.param(False, True, marks=pytest.mark.jax_too),  # rerun by test_packed_jax
    (True, True), (False, False)])
def test_packed_stopped_mid_epoch_resumes_to_the_same_weights(
        tmp_path: Path, monkeypatch: Any, capsys: Any, intelligent: bool, copy: bool) -> None:
    """``copy``: the group keeps a copy of each epoch's start and a signal mid-epoch goes
    back to it; else (epochs too short for the copy to pay) the epoch is finished first."""
    from netrain.train import packed
    from netrain.train.packed import train_networks_packed
    from netrain.train.sequential import train_networks

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    straight = [_job(a, i, intelligent) for i in range(3)]
    ends = train_networks_packed(range(3), lambda i: straight[i], Recorder())
    assert all(r is not None for r in ends)

    # checkpoints every 2 epochs (at 2); the signal comes as epoch 3 starts: the copy of its
    # start is checkpointed, or epoch 3 is finished and checkpointed at 4
    monkeypatch.setattr(packed, "SNAPSHOT_BUDGET", math.inf if copy else -1.0)
    _signal_in_epoch(monkeypatch, 3, 3)
    first = Stops()
    with pytest.raises(TaskInterrupted):
        train_networks_packed(range(3), lambda i: _job(b, i, intelligent), first)
    note_interrupt(None)
    monkeypatch.undo()
    reached = 3 if copy else 4
    finished = sorted(first.finished)
    running = sorted(first.interrupted)
    assert sorted(finished + running) == [0, 1, 2]
    if intelligent:
        assert finished == [0] and ends[0] is not None and ends[0].epochs < 3  # frozen early
    else:
        assert not finished
    for i in running:
        assert first.interrupted[i] == reached  # a completed epoch, not the torn one
        meta = checkpoint.read(b, f"n_t0_n{i}", f"t-packed/0/n{i}")
        assert meta is not None and meta.epoch == reached
        assert len(meta.history["loss"]) == reached
        if intelligent:
            assert meta.early_stopping["wait"] == reached - 1
            assert (checkpoint.model_file(b, meta).with_name(
                meta.model_file + checkpoint.BEST_SUFFIX)).is_file()
        assert len(first.logs[i]) == reached  # its epochs so far, told to the observer
    shutil.copytree(b, c)

    # resumed packed, and (the same checkpoints) resumed one by one; without copy, network 2
    # has lost its checkpoint: it starts again, alone (networks pack by resume epoch)
    fresh = [] if copy else [2]
    for i in fresh:
        checkpoint.remove(b, f"n_t0_n{i}")
    capsys.readouterr()
    again = {i: _job(b, i, intelligent, resume=True) for i in running}
    assert [i for i, j in again.items() if j.resume is None] == fresh
    out = train_networks_packed(running, lambda i: again[i], Recorder())
    log = capsys.readouterr().out
    assert f"packed {len(running) - len(fresh)} networks" in log
    if fresh:
        assert "packing off for network(s) 2: no other network has the same shapes" in log
    seq = {i: _job(c, i, intelligent, resume=True) for i in running}
    out_seq = train_networks(running, lambda i: seq[i], Recorder())
    for i, r, q in zip(running, out, out_seq, strict=True):
        ref = ends[i]
        assert r is not None and q is not None and ref is not None
        assert r.epochs == q.epochs == ref.epochs == (5 if intelligent else EPOCHS)
        np.testing.assert_allclose(r.history["loss"], ref.history["loss"], rtol=1e-5)
        for x, y, z in zip(_weights(again[i]), _weights(straight[i]), _weights(seq[i]),
                           strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
            np.testing.assert_allclose(z, y, atol=1e-5, rtol=0)
        assert checkpoint.read(b, f"n_t0_n{i}", f"t-packed/0/n{i}") is None  # removed
    for i in finished:
        for x, y in zip(_weights(_job(b, i, intelligent)), _weights(straight[i]), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("copy", [pytest.param(True, marks=pytest.mark.jax_too), False])
def test_packed_dropout_resumes_with_each_networks_random_state(
        tmp_path: Path, monkeypatch: Any, capsys: Any, copy: bool) -> None:
    """Each network's Dropout seed generator is a slice of the group's state: its checkpoint
    keeps that network's own state (Keras' model file does not), so the group resumes to the
    uninterrupted group's weights."""
    from netrain.train import packed
    from netrain.train.packed import train_networks_packed

    a, b = tmp_path / "a", tmp_path / "b"
    straight = [_job(a, i, False, gen=dropout_mlp) for i in range(3)]
    ends = train_networks_packed(range(3), lambda i: straight[i], Recorder())
    assert "packed 3 networks" in capsys.readouterr().out

    monkeypatch.setattr(packed, "SNAPSHOT_BUDGET", math.inf if copy else -1.0)
    _signal_in_epoch(monkeypatch, 3, 3)
    with pytest.raises(TaskInterrupted):
        train_networks_packed(range(3), lambda i: _job(b, i, False, gen=dropout_mlp), Stops())
    note_interrupt(None)
    monkeypatch.undo()
    reached = 3 if copy else 4
    steps = math.ceil(96 / 16)
    states = []
    for i in range(3):
        meta = checkpoint.read(b, f"n_t0_n{i}", f"t-packed/0/n{i}")
        assert meta is not None and meta.epoch == reached
        assert len(meta.seed_states) == 1 and meta.seed_states[0][1] == reached * steps
        states.append(meta.seed_states[0][0])
    assert len(set(states)) == 3  # each network's own seed
    again = {i: _job(b, i, False, resume=True, gen=dropout_mlp) for i in range(3)}
    out = train_networks_packed(range(3), lambda i: again[i], Recorder())
    assert "packed 3 networks" in capsys.readouterr().out
    for i, (r, ref) in enumerate(zip(out, ends, strict=True)):
        assert r is not None and ref is not None and r.epochs == ref.epochs == EPOCHS
        np.testing.assert_allclose(r.history["loss"], ref.history["loss"], rtol=1e-5)
        for x, y in zip(_weights(again[i], dropout_mlp), _weights(straight[i], dropout_mlp),
                        strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def _record(batch: Path) -> dict:  # type: ignore[type-arg]
    path = batch / "records" / "regressor-wide" / "0.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _journal_steps(batch: Path) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    path = batch / "journal" / "regressor-wide" / "0.jsonl"
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("ev") == "metrics" and "/n" in ev["key"]:
            steps.setdefault(ev["key"], []).append(ev["step"])
    return steps


def _net_runs(userproj: Path, batch: Path) -> dict[str, Any]:
    r = invoke("sync", batch.name, cwd=userproj)
    assert r.code == 0, r.text
    c = mlflow_client("sqlite:///" + str(userproj / "tracking" / "custom.db"))
    exp = c.get_experiment_by_name(batch.name)
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == NETS + 1  # the task's run and one per network, never more
    return {run.info.run_name: (run, c) for run in runs if "mlflow.parentRunId" in run.data.tags}


NETS, TASK_EPOCHS = 3, 12


def test_a_signalled_packed_task_resumes_its_networks_in_the_same_runs(
        tmp_path: Path) -> None:
    userproj = make_userproj(tmp_path / "p", "checkpoint:\n  every_epochs: 2\n")
    r = invoke("generate", "--models", f"regressor.wide={NETS}", "--array", "1", "--nb-epoch",
               str(TASK_EPOCHS), "--epoch-samples", "3200", "--pack", "--no-check",
               cwd=userproj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    packable = {"USERPROJ_SLEEP": "0"}  # the fixture's callbacks factory gives none: it packs
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", NETRAIN_EXECUTOR="local", **packable)
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as out:
        proc = subprocess.Popen(["bash", str(batch / "scripts" / "regressor-wide-sbatch.sh")],
                                env=env, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)
    # the first checkpoints (epoch 2) are written: the group is mid-training
    deadline = time.monotonic() + 120
    while len(list((batch / "checkpoints").glob("*.ckpt.json"))) < NETS:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the packed task never wrote its first checkpoints")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGUSR1)  # SLURM's time-limit warning to the batch shell
    assert proc.wait(timeout=60) == 128 + signal.SIGUSR1
    assert f"packed group of {NETS} networks stopped by SIGUSR1" in first_log.read_text()
    rec = _record(batch)
    assert rec["state"] == "killed"
    reached = {}
    for i in map(str, range(NETS)):
        net = rec["nets"][i]
        assert net["state"] == "interrupted" and 2 <= net["checkpoint_epoch"] < TASK_EPOCHS
        meta = json.loads((batch / "checkpoints" / f"{net['stem']}.ckpt.json").read_text())
        assert meta["epoch"] == net["checkpoint_epoch"]
        reached[net["stem"]] = meta["epoch"]
    assert len(set(reached.values())) == 1  # the group stops together
    before = _net_runs(userproj, batch)
    assert {run.info.status for run, _ in before.values()} == {"KILLED"}
    assert {run.data.tags["netrain.state"] for run, _ in before.values()} == {"resumable"}

    r = run_cli("run", batch.name, cwd=userproj, env=packable)
    assert r.code == 0, r.text + r.err
    log = (batch / "logs" / "regressor-wide_local_0.log").read_text()
    epoch = next(iter(reached.values()))
    assert log.count(f"resuming from its checkpoint at epoch {epoch}") == NETS
    assert f"packed {NETS} networks" in log
    rec = _record(batch)
    assert rec["state"] == "finished"
    assert [rec["nets"][str(i)]["epochs"] for i in range(NETS)] == [TASK_EPOCHS] * NETS
    assert not list((batch / "checkpoints").glob("*.ckpt.json"))  # removed after success
    steps = _journal_steps(batch)
    assert steps == {f"regressor-wide/0/n{i}": list(range(TASK_EPOCHS)) for i in range(NETS)}
    after = _net_runs(userproj, batch)
    assert {name: run.info.run_id for name, (run, _) in after.items()} == \
        {name: run.info.run_id for name, (run, _) in before.items()}  # the same runs
    for run, c in after.values():
        assert run.info.status == "FINISHED" and run.data.tags["netrain.state"] == "finished"
        assert run.data.tags["netrain.packed"] == str(NETS)
        history = c.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(TASK_EPOCHS))
