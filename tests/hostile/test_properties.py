"""Property-based tests of the parsers hostile input reaches first: whatever the input, the
result is a value or netrain's own error (SpecError, BatchError, ConfigError), never another
exception; and through the CLI, a clean exit or one error line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netrain.cli import cli
from netrain.define.batch import Batch, Manifest
from netrain.define.config import load_config, parse_config
from netrain.define.spec import MAX_NNETS, NAME_RE, parse_model_filter, parse_models, parse_tasks
from netrain.errors import BatchError, ConfigError, SpecError
from tests.conftest import make_userproj

#: Characters that matter to the --models grammar and to shells, plus some that do not.
GRAMMAR = [*"ab_-.=,0123456789 \t\n'\"$()`;&|<>*\\é\u00a0\uff13", "\x00", "\x1b"]
grammar_text = st.text(alphabet=st.sampled_from(GRAMMAR), max_size=40)
any_text = st.one_of(grammar_text, st.text(max_size=60))

names = st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z")
specs = st.lists(st.tuples(names, names, st.integers(1, MAX_NNETS)), min_size=1, max_size=6,
                 unique_by=lambda t: (t[0], t[1]))


@given(any_text)
@settings(max_examples=400)
def test_parse_models_returns_valid_specs_or_raises_spec_error(text: str) -> None:
    try:
        result = parse_models(text)
    except SpecError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert result
    assert len({s.key for s in result}) == len(result)
    for s in result:
        assert NAME_RE.fullmatch(s.cls) and NAME_RE.fullmatch(s.architecture)
        assert 1 <= s.nnets <= MAX_NNETS


@given(specs, st.booleans(), st.sampled_from([",", ", ", " ,\t"]))
def test_parse_models_round_trip(items: list[tuple[str, str, int]], carry: bool,
                                 sep: str) -> None:
    """Written back out (with or without the carried-over class), the specs parse the same."""
    parts, prev = [], None
    for cls, arch, n in items:
        parts.append(f"{arch}={n}" if carry and cls == prev else f"{cls}.{arch}={n}")
        prev = cls
    parsed = parse_models(sep.join(parts))
    assert [(s.cls, s.architecture, s.nnets) for s in parsed] == items


@given(any_text)
@settings(max_examples=300)
def test_parse_tasks_and_model_filter_raise_only_spec_error(text: str) -> None:
    try:
        idx = parse_tasks(text)
        assert idx == sorted(set(idx)) and all(i >= 0 for i in idx)
    except SpecError:
        pass
    try:
        keys = parse_model_filter(text)
        assert all(re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", k) for k in keys)
    except SpecError:
        pass


# --- the manifest loader ------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("manifest")


def _load_or_batch_error(d: Path) -> None:
    try:
        b = Batch.load(d)
    except BatchError as exc:
        assert str(exc)
        return
    assert isinstance(b.manifest, Manifest)
    for m in b.manifest.models:  # whatever loads is safe to put into scripts
        assert NAME_RE.fullmatch(m.cls) and NAME_RE.fullmatch(m.architecture)
    assert NAME_RE.fullmatch(b.manifest.id)


@given(st.binary(max_size=300))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_batch_load_of_any_bytes(batch_dir: Path, data: bytes) -> None:
    (batch_dir / "batch.yaml").write_bytes(data)
    _load_or_batch_error(batch_dir)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=15)

GOOD = {
    "netrain_manifest": 1, "id": "20240102-030405-abcd", "description": "d",
    "created": "2024-01-02T03:04:05+00:00", "netrain_version": "0.1.0", "gpu": False,
    "main_script": "netrain_main.py", "code": {}, "tracking": {"uri": "sqlite:////t.db",
                                                                "experiment_id": "1"},
    "environment": {"kind": "python", "value": "/usr/bin/python3"}, "launcher": "direct",
    "slurm": {}, "models": [{"class": "c", "architecture": "a", "segments": [
        {"start": 0, "count": 2, "nnets": 1, "nb_epoch": 1, "epoch_samples": 8,
         "intelligent": False, "added": ""}], "jobs": []}],
}
MODEL_KEYS = ["class", "architecture", "segments", "jobs"]
SEGMENT_KEYS = ["start", "count", "nnets", "nb_epoch", "epoch_samples", "intelligent", "added"]


@given(st.sampled_from([*GOOD, *(f"m.{k}" for k in MODEL_KEYS),
                        *(f"s.{k}" for k in SEGMENT_KEYS)]),
       st.one_of(yaml_values, names.map(lambda n: n + "\n; touch PWNED")))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_batch_load_of_a_manifest_with_one_field_replaced(batch_dir: Path, key: str,
                                                          value: Any) -> None:
    import copy

    d = copy.deepcopy(GOOD)
    if key.startswith("m."):
        d["models"][0][key[2:]] = value
    elif key.startswith("s."):
        d["models"][0]["segments"][0][key[2:]] = value
    else:
        d[key] = value
    (batch_dir / "batch.yaml").write_text(yaml.safe_dump(d, allow_unicode=True),
                                          encoding="utf-8")
    _load_or_batch_error(batch_dir)


# --- netrain.yaml -------------------------------------------------------------------------

CONFIG_KEYS = ["trainings_dir", "main_script", "code_dir", "code_exclude", "tracking_uri",
               "environments", "executor", "launcher", "workers", "slurm", "disk", "bogus"]


@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), yaml_values, max_size=5))
@settings(max_examples=300)
def test_parse_config_of_any_mapping(raw: dict[str, Any]) -> None:
    try:
        parse_config(raw, base=Path("/nonexistent/project"))
    except ConfigError as exc:
        assert str(exc)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(
    lambda b: b.decode("latin-1"))))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_load_config_of_any_text(batch_dir: Path, text: str) -> None:
    path = batch_dir / "netrain.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc)


# --- through the CLI, in process (no TensorFlow, no MLflow: --dry-run --no-check) --------

@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_userproj(tmp_path_factory.mktemp("prop") / "proj")


CLI_ENV = {"NETRAIN_CONFIG": None, "NETRAIN_TRAININGS_DIR": None, "NETRAIN_TRACKING_URI": None}


@given(st.text(alphabet=st.sampled_from([c for c in GRAMMAR if c != "\x00"]), max_size=30))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cli_models_either_dry_runs_or_says_one_line(project: Path, text: str) -> None:
    try:
        expected_ok = bool(parse_models(text))
    except SpecError:
        expected_ok = False
    r = CliRunner().invoke(cli, ["--config", str(project / "netrain.yaml"), "generate",
                                 "--dry-run", "--no-check", "--models", text], env=CLI_ENV)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    if expected_ok:
        assert r.exit_code == 0, r.stderr
    else:
        assert r.exit_code == 2
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("netrain: error: ")
    assert not (project / "runs").exists(), "a dry run wrote into the trainings directory"


@given(specs.map(lambda items: items[:3]))
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cli_valid_models_dry_run(project: Path, items: list[tuple[str, str, int]]) -> None:
    text = ", ".join(f"{c}.{a}={n}" for c, a, n in items)
    r = CliRunner().invoke(cli, ["--config", str(project / "netrain.yaml"), "generate",
                                 "--dry-run", "--no-check", "--models", text], env=CLI_ENV)
    assert r.exit_code == 0, r.stderr
    for c, a, _ in items:
        assert f"scripts/{c}-{a}-sbatch.sh" in r.stderr
    assert not (project / "runs").exists()
