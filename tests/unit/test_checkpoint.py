"""Checkpoint files and policy: atomic commits, reading back, intervals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from netrain.define import checkpoint
from netrain.define.checkpoint import Meta, Policy, Schedule


def _commit(batch: Path, epoch: int, key: str = "m/0/n0") -> Meta:
    meta = Meta(key=key, stem="net_t0_n0", epoch=epoch, history={"loss": [1.0] * epoch})
    checkpoint.commit(batch, meta, lambda p: p.write_bytes(b"model %d" % epoch))
    return meta


def test_commit_then_read_back_and_older_model_file_is_removed(tmp_path: Path) -> None:
    first = _commit(tmp_path, 2)
    before = _commit(tmp_path, 3)
    last = _commit(tmp_path, 4)
    got = checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0")
    assert got is not None and got.epoch == 4 and got.history["loss"] == [1.0] * 4
    assert checkpoint.model_file(tmp_path, got).read_bytes() == b"model 4"
    assert not (tmp_path / "checkpoints" / first.model_file).exists()
    assert (tmp_path / "checkpoints" / before.model_file).exists()  # the fallback
    assert last.model_file == got.model_file
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] \
        == [".net_t0_n0.ckpt.prev.json"]
    checkpoint.remove(tmp_path, "net_t0_n0")
    assert not list((tmp_path / "checkpoints").iterdir())


def test_a_checkpoint_cut_short_falls_back_to_the_one_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    def real(epoch: int) -> Meta:  # a zip archive, as a .keras file is
        meta = Meta(key="m/0/n0", stem="net_t0_n0", epoch=epoch)

        def write(p: Path) -> None:
            with zipfile.ZipFile(p, "w") as z:
                z.writestr("model.weights.h5", b"x" * 1000)
        checkpoint.commit(tmp_path, meta, write)
        return meta
    real(3)
    last = real(4)
    model = checkpoint.model_file(tmp_path, last)
    model.write_bytes(model.read_bytes()[:500])  # a disk that lost the file's end
    got = checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0")
    assert got is not None and got.epoch == 3
    err = capsys.readouterr().err
    assert err.strip() == (f"netrain: warning: checkpoint {model} is cut short or corrupted: "
                           "resuming from the checkpoint before it (epoch 3)")
    meta = checkpoint.meta_path(tmp_path, "net_t0_n0")
    model.write_bytes(b"")
    meta.write_text(meta.read_text()[:40])  # the metadata cut short: the same fallback
    got = checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0")
    assert got is not None and got.epoch == 3
    assert f"checkpoint {meta} is cut short or corrupted" in capsys.readouterr().err


def test_seed_generator_states_are_read_back(tmp_path: Path) -> None:
    meta = Meta(key="m/0/n0", stem="net_t0_n0", epoch=2, seed_states=[[611178003, 6]])
    checkpoint.commit(tmp_path, meta, lambda p: p.write_bytes(b"model"))
    got = checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0")
    assert got is not None and got.seed_states == [[611178003, 6]] and not got.partial


def test_another_networks_key_or_a_torn_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    _commit(tmp_path, 2, key="m/0/n0")
    assert checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0~2") is None  # a rerun's key
    checkpoint.meta_path(tmp_path, "net_t0_n0").write_text('{"key": "m/0/n0", "epo')
    assert checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0") is None  # none before it


def test_a_failed_model_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    _commit(tmp_path, 2)

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoint.commit(tmp_path, Meta(key="m/0/n0", stem="net_t0_n0", epoch=3), broken)
    got = checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0")
    assert got is not None and got.epoch == 2


def test_remove_drops_model_and_metadata(tmp_path: Path) -> None:
    _commit(tmp_path, 2)
    checkpoint.remove(tmp_path, "net_t0_n0")
    assert checkpoint.read(tmp_path, "net_t0_n0", "m/0/n0") is None
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.suffix == ".keras"]


@pytest.mark.parametrize("settings, error", [
    ({"every_epochs": -1}, "every_epochs"),
    ({"every_epochs": 1.5}, "every_epochs"),
    ({"every_minutes": "soon"}, "every_minutes"),
    ({"keep": "yes"}, "keep"),
    ("often", "mapping"),
])
def test_bad_policy_names_the_key(settings: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Policy.from_mapping(settings)  # type: ignore[arg-type]


def test_policy_reads_auto_and_overrides_a_base() -> None:
    base = Policy.from_mapping({"every_epochs": 5, "keep": True})
    assert base == Policy(every_epochs=5, keep=True)
    assert Policy.from_mapping({"every_epochs": "auto"}, base) == Policy(every_epochs=0, keep=True)


def test_schedule_every_n_epochs() -> None:
    s = Schedule(Policy(every_epochs=3))
    due = []
    for _ in range(7):
        s.epoch_started()
        d = s.due()
        due.append(d)
        if d:
            s.saved(0.01)
    assert due == [False, False, True, False, False, True, False]


def test_automatic_schedule_spaces_out_an_expensive_checkpoint() -> None:
    s = Schedule(Policy())
    s.epoch_started()
    assert s.due()  # nothing measured yet: checkpoint
    s.saved(1.0)  # a save that costs a second
    s.epoch_seconds = 0.1
    due = []
    for _ in range(5):
        s._epoch_start -= 0.1  # pretend each epoch took 0.1 s
        due.append(s.due())
    assert not any(due)  # 1 s of saving every 0.5 s of training is far over 2 %


def test_automatic_schedule_with_a_known_cost_keeps_its_budget_from_the_first_epoch() -> None:
    s = Schedule(Policy(), expected_seconds=1.0)  # a packed group's checkpoint, probed
    due = []
    for _ in range(60):
        s._epoch_start = time.monotonic() - 1.0  # pretend each epoch took 1 s
        due.append(s.due())
    assert due.index(True) == 49  # 1 s of saving is 2 % of the 50 epochs trained
