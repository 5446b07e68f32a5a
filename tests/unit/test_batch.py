"""batch: the manifest's round trip, its refusal of garbage, and batch lookup."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netrain.define.batch import MANIFEST, Batch, Manifest, find_batch, list_batches, write_manifest
from netrain.define.spec import NAME_RE
from netrain.errors import BatchError

MakeManifest = Callable[..., Manifest]


def test_round_trip(make_manifest: MakeManifest) -> None:
    m = make_manifest()
    d = m.to_dict()
    assert d["netrain_manifest"] == 1
    assert d["models"][0]["class"] == "classifier" and "cls" not in d["models"][0]
    assert Manifest.from_dict(d, "x") == m
    # and through JSON-safe YAML, as on disk
    assert Manifest.from_dict(yaml.safe_load(yaml.safe_dump(d)), "x") == m


def test_round_trip_on_disk(tmp_path: Path, make_manifest: MakeManifest) -> None:
    m = make_manifest()
    write_manifest(tmp_path, m)
    text = (tmp_path / MANIFEST).read_text()
    assert text.startswith("# netrain batch manifest")
    assert Batch.load(tmp_path).manifest == m


def test_manifest_counts(make_manifest: MakeManifest) -> None:
    m = make_manifest()
    assert m.model("classifier.chransynth").array == 6
    assert m.model("classifier.chransynth").networks == 4 * 32 + 2 * 16
    assert m.networks == 1500 * 10 + 160 + 10 * 45
    with pytest.raises(BatchError, match=r"no model a\.b"):
        m.model("a.b")


@pytest.mark.parametrize("data", [
    None, [], [1, 2], "text", 3, {}, {"netrain_manifest": 1}, {"netrain_manifest": 2},
    {"netrain_manifest": "1"}, {"netrain_manifest": 1, "models": 5},
    {"netrain_manifest": 1, "models": [{"class": "a"}]},
])
def test_from_dict_garbage(data: Any) -> None:
    with pytest.raises(BatchError) as exc:
        Manifest.from_dict(data, "/t/b/batch.yaml")
    assert "/t/b/batch.yaml" in str(exc.value)


def test_from_dict_missing_fields(make_manifest: MakeManifest) -> None:
    for key in ("id", "created", "main_script", "tracking", "environment", "models"):
        d = make_manifest().to_dict()
        del d[key]
        with pytest.raises(BatchError, match="corrupt"):
            Manifest.from_dict(d, "w")


def test_from_dict_bad_segment(make_manifest: MakeManifest) -> None:
    d = make_manifest().to_dict()
    d["models"][0]["segments"][0]["bogus"] = 1
    with pytest.raises(BatchError, match="corrupt"):
        Manifest.from_dict(d, "w")


def test_from_dict_refuses_ill_typed_segment(make_manifest: MakeManifest) -> None:
    d = make_manifest().to_dict()
    d["models"][0]["segments"][0]["start"] = "0"
    with pytest.raises(BatchError):
        m = Manifest.from_dict(d, "w")
        _ = [x.array for x in m.models]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_from_dict_arbitrary_data(data: Any) -> None:
    """Data that is not a manifest (no ``netrain_manifest: 1``) is always a BatchError that
    names the file, never another exception."""
    with pytest.raises(BatchError, match=r"^w "):
        Manifest.from_dict(data, "w")


def mutate(d: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Replace a few fields of a real manifest dict by arbitrary JSON-like values."""
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        target = data.draw(st.sampled_from(["top", "model", "segment", "job"]))
        value = data.draw(json_values)
        if target == "top":
            d[data.draw(st.sampled_from(sorted(d)))] = value
            continue
        try:
            m = d["models"][0]
            if target == "model":
                m[data.draw(st.sampled_from(["class", "architecture", "segments", "jobs"]))] = value
            else:
                item = m["segments" if target == "segment" else "jobs"][0]
                item[data.draw(st.sampled_from(sorted(item)))] = value
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation already broke the path
    return d


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_from_dict_mutated_manifest(make_manifest: MakeManifest, data: st.DataObject) -> None:
    d = mutate(json.loads(json.dumps(make_manifest().to_dict())), data)
    try:
        m = Manifest.from_dict(d, "w")
    except BatchError as exc:
        assert str(exc).startswith("w ") and "restore it" in str(exc)
        return
    # Accepted: then it is well-formed, and it survives a round trip unchanged.
    for name in [m.id, *(x for model in m.models for x in (model.cls, model.architecture))]:
        assert NAME_RE.fullmatch(name), name
    for model in m.models:
        for seg in model.segments:
            assert all(type(v) is int for v in (seg.start, seg.count, seg.nnets, seg.nb_epoch,
                                                 seg.epoch_samples))
            assert type(seg.intelligent) is bool
        for job in model.jobs:
            assert all(type(v) is str for v in (job.job_id, job.indices, job.executor))
            assert type(job.offset) is int
    assert Manifest.from_dict(m.to_dict(), "w") == m


# ------------------------------------------------------------------------- find_batch

@pytest.fixture
def trainings(tmp_path: Path, make_manifest: MakeManifest,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    t = tmp_path / "trainings"
    for bid in ("20240101-000000-aaaa", "20240101-000000-aaaa2", "20240102-120000-bbbb",
                "20240103-000000-cccc"):
        (t / bid).mkdir(parents=True)
        write_manifest(t / bid, make_manifest(id=bid))
    (t / "20240104-not-a-batch").mkdir()  # no manifest
    (t / ".tmp-20240105-000000-dddd-x").mkdir()  # a generate in progress
    write_manifest(t / ".tmp-20240105-000000-dddd-x", make_manifest(id="20240105-000000-dddd"))
    monkeypatch.chdir(tmp_path / "trainings" / "..")
    return t


def test_list_batches(trainings: Path) -> None:
    assert [p.name for p in list_batches(trainings)] == [
        "20240101-000000-aaaa", "20240101-000000-aaaa2", "20240102-120000-bbbb",
        "20240103-000000-cccc"]
    assert list_batches(trainings / "missing") == []


def test_find_batch_exact_id_wins_over_prefix(trainings: Path) -> None:
    assert find_batch("20240101-000000-aaaa", trainings) == trainings / "20240101-000000-aaaa"


def test_find_batch_unique_prefix(trainings: Path) -> None:
    assert find_batch("20240102", trainings) == trainings / "20240102-120000-bbbb"
    assert find_batch("20240103-000000-c", trainings) == trainings / "20240103-000000-cccc"


def test_find_batch_ambiguous_prefix(trainings: Path) -> None:
    with pytest.raises(BatchError, match="ambiguous") as exc:
        find_batch("20240101", trainings)
    assert "20240101-000000-aaaa" in str(exc.value) and "20240101-000000-aaaa2" in str(exc.value)


@pytest.mark.parametrize("ref", ["2025", "20240104-not-a-batch", "20240105", "zzz"])
def test_find_batch_unknown(trainings: Path, ref: str) -> None:
    with pytest.raises(BatchError, match="no batch"):
        find_batch(ref, trainings)


@pytest.mark.parametrize("ref", ["", "  "])
def test_find_batch_empty(trainings: Path, ref: str) -> None:
    with pytest.raises(BatchError, match="no batch given"):
        find_batch(ref, trainings)


def test_find_batch_by_path(trainings: Path, tmp_path: Path) -> None:
    target = trainings / "20240102-120000-bbbb"
    assert find_batch(str(target), None) == target.resolve()
    assert find_batch("trainings/20240102-120000-bbbb", None) == target.resolve()
    with pytest.raises(BatchError, match="not a batch directory"):
        find_batch(str(trainings / "20240104-not-a-batch"), trainings)


def test_find_batch_without_trainings_dir(trainings: Path) -> None:
    with pytest.raises(BatchError, match="not found"):
        find_batch("20240102", None)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match=r"no batch\.yaml"):
        Batch.load(tmp_path)
    (tmp_path / MANIFEST).write_text("a: [b\n")
    with pytest.raises(BatchError, match="not valid YAML"):
        Batch.load(tmp_path)
    (tmp_path / MANIFEST).write_text("- 1\n")
    with pytest.raises(BatchError, match="not a netrain batch manifest"):
        Batch.load(tmp_path)


def test_segment_pack_round_trips_and_defaults_to_false(make_manifest: MakeManifest) -> None:
    m = make_manifest()
    m.models[1].segments[1].pack = True
    d = m.to_dict()
    assert d["models"][1]["segments"][1]["pack"] is True
    assert Manifest.from_dict(yaml.safe_load(yaml.safe_dump(d)), "x") == m
    for seg in d["models"][0]["segments"]:  # a manifest written before --pack existed
        del seg["pack"]
    assert Manifest.from_dict(d, "x").models[0].segments[0].pack is False
    d["models"][0]["segments"][0]["pack"] = "yes"
    with pytest.raises(BatchError, match="corrupt"):
        Manifest.from_dict(d, "x")
