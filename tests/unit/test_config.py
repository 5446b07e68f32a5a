"""config: netrain.yaml -> Config, defaults, validation, paths and URIs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from netrain.define.config import (
    DEFAULT_CODE_EXCLUDE,
    Config,
    DiskConfig,
    SlurmConfig,
    find_config,
    load_config,
    parse_config,
)
from netrain.errors import ConfigError


def parse(raw: dict[str, Any], base: Path) -> Config:
    return parse_config(raw, base=base, path=base / "netrain.yaml")


def test_defaults(tmp_path: Path) -> None:
    cfg = parse_config({}, base=tmp_path)
    base = tmp_path.resolve()
    assert cfg.path is None
    assert cfg.trainings_dir == base / "trainings"
    assert cfg.main_script == base / "netrain_main.py"
    assert cfg.code_dir == base
    assert cfg.code_exclude == DEFAULT_CODE_EXCLUDE
    assert cfg.tracking_uri == "sqlite:///" + str(base / "trainings" / "mlflow.db")
    assert cfg.tracking_uri.startswith("sqlite:////")
    assert cfg.executor == "local" and cfg.launcher == "mlflow" and cfg.workers == 2
    assert cfg.slurm == SlurmConfig() and cfg.disk == DiskConfig()
    assert cfg.cpu_env.kind == "python"
    assert cfg.cpu_env.value == str(Path(sys.executable).absolute())
    assert cfg.gpu_env == cfg.cpu_env
    assert cfg.environment(gpu=True) is cfg.gpu_env
    assert cfg.environment(gpu=False) is cfg.cpu_env


def test_default_tracking_uri_follows_trainings_dir(tmp_path: Path) -> None:
    cfg = parse_config({"trainings_dir": "runs/here"}, base=tmp_path)
    assert cfg.trainings_dir == tmp_path.resolve() / "runs" / "here"
    assert cfg.tracking_uri == "sqlite:///" + str(cfg.trainings_dir / "mlflow.db")


def test_relative_paths_resolve_against_base(tmp_path: Path) -> None:
    cfg = parse_config({
        "trainings_dir": "../shared/trainings",
        "main_script": "src/netrain_main.py",
        "code_dir": "src",
        "code_exclude": ["data/*"],
    }, base=tmp_path / "proj")
    root = tmp_path.resolve()
    assert cfg.trainings_dir == root / "shared" / "trainings"
    assert cfg.main_script == root / "proj" / "src" / "netrain_main.py"
    assert cfg.code_dir == root / "proj" / "src"
    assert cfg.code_exclude == (*DEFAULT_CODE_EXCLUDE, "data/*")


def test_code_dir_defaults_to_main_script_dir(tmp_path: Path) -> None:
    cfg = parse_config({"main_script": "src/main.py"}, base=tmp_path)
    assert cfg.code_dir == tmp_path.resolve() / "src"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "trainings"
    cfg = parse_config({"trainings_dir": str(target)}, base=tmp_path / "elsewhere")
    assert cfg.trainings_dir == target.resolve()


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRAIN_TRAININGS_DIR", str(tmp_path / "env-trainings"))
    monkeypatch.setenv("NETRAIN_TRACKING_URI", "http://tracking.example:5000")
    cfg = parse_config({"trainings_dir": "x", "tracking_uri": "sqlite:///a.db"}, base=tmp_path)
    assert cfg.trainings_dir == (tmp_path / "env-trainings").resolve()
    assert cfg.tracking_uri == "http://tracking.example:5000"


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"trainings_dir": "t", "trainigs_dir": "t"}, tmp_path)
    msg = str(exc.value)
    assert "'trainigs_dir'" in msg
    assert "netrain.yaml" in msg
    assert "trainings_dir" in msg  # the allowed keys are listed


def test_unknown_slurm_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"slurm": {"partition": "cpu", "partiton": "gpu"}}, tmp_path)
    assert "'partiton'" in str(exc.value) and "slurm" in str(exc.value)


@pytest.mark.parametrize("raw, fragment", [
    ({"workers": "2"}, "workers"),
    ({"workers": 0}, "workers"),
    ({"workers": True}, "workers"),
    ({"executor": "cluster"}, "executor"),
    ({"launcher": "srun"}, "launcher"),
    ({"trainings_dir": 3}, "trainings_dir"),
    ({"trainings_dir": ""}, "trainings_dir"),
    ({"main_script": ["a"]}, "main_script"),
    ({"code_exclude": "*.pyc"}, "code_exclude"),
    ({"code_exclude": [1]}, "code_exclude"),
    ({"tracking_uri": 5}, "tracking_uri"),
    ({"tracking_uri": "  "}, "tracking_uri"),
    ({"slurm": ["partition"]}, "slurm"),
    ({"slurm": {"cpus_per_task": -1}}, "cpus_per_task"),
    ({"slurm": {"cpus_per_task": 0}}, "cpus_per_task"),
    ({"slurm": {"cpus_per_task": "4"}}, "cpus_per_task"),
    ({"slurm": {"max_running": True}}, "max_running"),
    ({"slurm": {"extra": "--exclusive"}}, "extra"),
    ({"slurm": {"extra": [1]}}, "extra"),
    ({"slurm": {"extra": ["--a\n--b"]}}, "extra"),
    ({"slurm": {"partition": ["a"]}}, "partition"),
    ({"slurm": {"signal": True}}, "signal"),
    ({"slurm": {"time": "1:00\n#SBATCH --x"}}, "time"),
    ({"disk": {"check": "maybe"}}, "check"),
    ({"disk": {"mb_per_network": -1}}, "mb_per_network"),
    ({"environments": "python"}, "environments"),
    ({"environments": {"cpu": "python", "tpu": "python"}}, "environments"),
    ({"environments": {"cpu": 3}}, "environments.cpu"),
    ({"environments": {"cpu": "docker:img"}}, "environments.cpu"),
    ({"environments": {"cpu": "conda:my env"}}, "environments.cpu"),
    ({"environments": {"cpu": "conda:$(x)"}}, "environments.cpu"),
    ({"environments": {"cpu": "conda:"}}, "environments.cpu"),
    ({"environments": {"gpu": "conda:a;b"}}, "environments.gpu"),
])
def test_wrong_values_name_the_key(tmp_path: Path, raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(raw, tmp_path)
    assert fragment in str(exc.value)
    assert str(tmp_path / "netrain.yaml") in str(exc.value)


def test_slurm_section_values(tmp_path: Path) -> None:
    cfg = parse({"slurm": {"partition": "gpu", "time": "02:00:00", "mem": 16000,
                           "cpus_per_task": 4, "max_running": 10, "account": None,
                           "extra": ["--constraint=a100", "exclusive"]},
                 "disk": {"check": "refuse", "mb_per_network": 2}}, tmp_path)
    assert cfg.slurm.partition == "gpu" and cfg.slurm.time == "02:00:00"
    assert cfg.slurm.mem == "16000"  # numbers become strings for #SBATCH lines
    assert cfg.slurm.cpus_per_task == 4 and cfg.slurm.max_running == 10
    assert cfg.slurm.account is None and cfg.slurm.gres == "gpu:1"
    assert cfg.slurm.extra == ("--constraint=a100", "exclusive")
    assert cfg.disk == DiskConfig(check="refuse", mb_per_network=2)


# ------------------------------------------------------------------------- tracking URI

@pytest.mark.parametrize("uri", [
    "http://user:pw@host:5000",
    "https://user:secret@tracking.example.org",
    "http://user@host",
    "postgresql://user:pw@db/mlflow",
])
def test_credentials_in_tracking_uri_are_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"tracking_uri": uri}, tmp_path)
    msg = str(exc.value)
    assert "MLFLOW_TRACKING_USERNAME" in msg
    assert "pw" not in msg.replace("MLFLOW_TRACKING_PASSWORD", "")
    assert "secret" not in msg


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "file:mlruns", "./mlruns", "/abs/mlruns",
                                 "mlruns"])
def test_file_store_is_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError, match="file store"):
        parse({"tracking_uri": uri}, tmp_path)


def test_relative_sqlite_is_made_absolute(tmp_path: Path) -> None:
    cfg = parse({"tracking_uri": "sqlite:///db/mlflow.db"}, tmp_path)
    assert cfg.tracking_uri == "sqlite:///" + str(tmp_path.resolve() / "db" / "mlflow.db")


def test_absolute_sqlite_is_kept(tmp_path: Path) -> None:
    cfg = parse({"tracking_uri": " sqlite:////data/mlflow.db "}, tmp_path)
    assert cfg.tracking_uri == "sqlite:////data/mlflow.db"


def test_sqlite_with_two_slashes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sqlite:///path"):
        parse({"tracking_uri": "sqlite://mlflow.db"}, tmp_path)


@pytest.mark.parametrize("uri", ["http://tracking:5000", "https://mlflow.example.org/",
                                 "databricks://profile", "postgresql://db.example/mlflow"])
def test_server_uris_are_kept(tmp_path: Path, uri: str) -> None:
    assert parse({"tracking_uri": uri}, tmp_path).tracking_uri == uri


def test_malformed_tracking_uri_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tracking_uri"):
        parse({"tracking_uri": "http://[oops/mlflow"}, tmp_path)


# ------------------------------------------------------------------------- environments

def test_environment_python(tmp_path: Path) -> None:
    cfg = parse({"environments": {"cpu": "python"}}, tmp_path)
    assert cfg.cpu_env.kind == "python"
    assert cfg.cpu_env.value == str(Path(sys.executable).absolute())
    assert cfg.cpu_env.python_bin_dir == str(Path(sys.executable).absolute().parent)


def test_environment_python_path(tmp_path: Path) -> None:
    cfg = parse({"environments": {"cpu": "python:/x/bin/python",
                                  "gpu": "python:venv/bin/python"}}, tmp_path)
    assert (cfg.cpu_env.kind, cfg.cpu_env.value) == ("python", "/x/bin/python")
    assert cfg.cpu_env.python_bin_dir == "/x/bin"
    assert cfg.gpu_env.kind == "python"
    assert cfg.gpu_env.value == str(tmp_path / "venv" / "bin" / "python")


def test_environment_conda_name(tmp_path: Path) -> None:
    cfg = parse({"environments": {"cpu": "conda:myenv", "gpu": "conda:my-gpu_env"}}, tmp_path)
    assert (cfg.cpu_env.kind, cfg.cpu_env.value) == ("conda-name", "myenv")
    assert (cfg.gpu_env.kind, cfg.gpu_env.value) == ("conda-name", "my-gpu_env")
    assert cfg.cpu_env.python_bin_dir is None


def test_gpu_environment_defaults_to_cpu(tmp_path: Path) -> None:
    cfg = parse({"environments": {"cpu": "conda:myenv"}}, tmp_path)
    assert cfg.gpu_env == cfg.cpu_env


def test_environment_conda_yaml(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("name: x\n")
    cfg = parse({"environments": {"cpu": "env.yml"}}, tmp_path)
    assert (cfg.cpu_env.kind, cfg.cpu_env.value) == ("conda-yaml",
                                                     str((tmp_path / "env.yml").resolve()))


def test_environment_missing_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"environments": {"gpu": "envs/missing.yaml"}}, tmp_path)
    assert "missing.yaml" in str(exc.value) and "does not exist" in str(exc.value)
    assert "environments.gpu" in str(exc.value)


def test_environment_python_without_a_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse({"environments": {"cpu": "python:"}}, tmp_path)


# ----------------------------------------------------------------------- loading files

def test_load_config_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "netrain.yaml"
    f.write_text("trainings_dir: t\nslurm: [partition\n  time: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert str(f.resolve()) in msg
    assert "YAML syntax error" in msg
    assert "line" in msg


def test_load_config_not_a_mapping(tmp_path: Path) -> None:
    f = tmp_path / "netrain.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(str(f))


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_load_config_empty_file_gives_defaults(tmp_path: Path) -> None:
    f = tmp_path / "netrain.yaml"
    f.write_text("# nothing yet\n")
    cfg = load_config(f)
    assert cfg.path == f.resolve()
    assert cfg.trainings_dir == tmp_path.resolve() / "trainings"


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "netrain.yaml"
    f.write_text("workers: many\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert str(f.resolve()) in str(exc.value) and "workers" in str(exc.value)


def test_find_config_in_a_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "netrain.yaml").write_text("trainings_dir: tr\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_config() == (tmp_path / "netrain.yaml").resolve()
    cfg = load_config()
    assert cfg.path == (tmp_path / "netrain.yaml").resolve()
    assert cfg.trainings_dir == tmp_path.resolve() / "tr"  # relative to the file, not the cwd


def test_find_config_prefers_the_nearest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "netrain.yaml").write_text("")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "netrain.yaml").write_text("")
    assert find_config(tmp_path / "a") == (tmp_path / "a" / "netrain.yaml").resolve()


def test_netrain_config_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "cfg" / "other.yaml"
    f.parent.mkdir()
    f.write_text("workers: 7\n")
    monkeypatch.setenv("NETRAIN_CONFIG", str(f))
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.workers == 7 and cfg.path == f.resolve()


def test_no_config_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if find_config() is not None:
        pytest.skip("a netrain.yaml exists above the temporary directory")
    with pytest.raises(ConfigError, match="netrain init"):
        load_config()
    cfg = load_config(required=False)
    assert cfg.path is None and cfg.trainings_dir == tmp_path.resolve() / "trainings"


# ------------------------------------------- the messages a user reads (from the old CLI table)

BASE = ("trainings_dir: runs\nmain_script: src/main.py\n"
        "tracking_uri: sqlite:///tracking/custom.db\nlauncher: direct\nworkers: 2\n")


def _with(*lines: str) -> str:
    keys = {ln.split(":", 1)[0] for ln in lines if not ln.startswith((" ", "-"))}
    base = [ln for ln in BASE.splitlines() if ln.split(":", 1)[0] not in keys]
    return "\n".join([*base, *lines]) + "\n"


@pytest.mark.parametrize("text, fragments, forbidden", [
    ("trainings_dir: runs\n\tmain_script: src/main.py\n", ("YAML syntax error", "fix the file"),
     ()),
    ("- trainings_dir\n- runs\n", ("expected a mapping of keys",), ()),
    ("[" * 50_000, ("nested too deeply", "fix the file"), ()),
    (b"trainings_dir: \xff\xfe runs\n", ("cannot read", "netrain.yaml", "save it as UTF-8"), ()),
    (_with("trainingsdir: runs"), ("unknown key 'trainingsdir'", "allowed keys are"), ()),
    (_with("slurm:", "  partion: gpu"), ("slurm: unknown key 'partion'", "allowed keys are"), ()),
    (_with("workers: two"), ("workers must be a positive integer", "got 'two'"), ()),
    (_with("workers: true"), ("workers must be a positive integer",), ()),
    (_with("executor: cloud"), ("executor must be 'local' or 'slurm'", "'cloud'"), ()),
    (_with("launcher: docker"), ("launcher must be 'mlflow', 'mlflow-cli' or 'direct'",), ()),
    (_with("trainings_dir: 5"), ("trainings_dir must be a directory path, got 5",), ()),
    (_with("code_exclude: '*.npz'"), ("code_exclude must be a list of glob patterns",
                                      "got '*.npz'"), ()),
    (_with("slurm: gpu"), ("slurm must be a mapping", "got 'gpu'"), ()),
    (_with("slurm:", "  max_running: -1"), ("slurm.max_running must be a positive integer, "
                                            "got -1",), ()),
    (_with("slurm:", "  partition: \"gpu'; touch PWNED\""), ("slurm.partition",
                                                            "without quotes", "#SBATCH"), ()),
    (_with("slurm:", "  extra: [\"--exclusive\\ntouch PWNED\"]"),
     ("slurm.extra", "spans lines", "one option per item"), ()),
    (_with("disk:", "  check: maybe"), ("disk.check must be warn, refuse or off", "'maybe'"),
     ()),
    (_with("disk:", "  mb_per_network: -1"), ("disk.mb_per_network must be a number of "
                                              "megabytes",), ()),
    (_with("environments:", "  cpu: conda:my env"), ("'conda:my env' is not a valid conda "
                                                     "environment name", "'conda env list'"),
     ()),
    (_with("environments:", "  cpu: conda:$(touch PWNED)"), ("'conda:$(touch PWNED)'",
                                                            "not a valid conda"), ()),
    (_with("environments:", "  cpu: conda:base;touch PWNED"), ("'conda:base;touch PWNED'",
                                                              "not a valid conda"), ()),
    (_with("environments:", "  cpu: docker:tf"), ("'docker:tf' is not understood",
                                                  "use 'python'"), ()),
    (_with("tracking_uri: ./mlruns"), ("deprecated file store", "sqlite:///path/mlflow.db"), ()),
    (_with("tracking_uri: sqlite://x.db"), ("'sqlite://x.db'",
                                            "write sqlite:///path/to/mlflow.db"), ()),
    (_with("tracking_uri: http://alice:s3cr3t-pw@127.0.0.1:5000"),
     ("tracking_uri contains credentials", "MLFLOW_TRACKING_PASSWORD"), ("s3cr3t-pw",)),
    (_with("tracking_uri: https://tok-9f8e7d@mlflow.example.org"),
     ("tracking_uri contains credentials", "MLFLOW_TRACKING_TOKEN"), ("tok-9f8e7d",)),
    (_with("tracking_uri: 'http://u:pw-2b8c@[bad'"), ("not a valid URI", "fix tracking_uri"),
     ("pw-2b8c",)),
], ids=["tab-indent", "not-a-mapping", "nested-too-deep", "not-utf8", "unknown-key",
        "unknown-slurm-key", "workers-word", "workers-bool", "executor", "launcher",
        "trainings-dir-number", "code-exclude-string", "slurm-not-mapping",
        "slurm-max-running", "slurm-quote", "slurm-extra-newline", "disk-check",
        "disk-negative", "conda-name-space", "conda-name-substitution",
        "conda-name-semicolon", "environment-unknown", "file-store", "sqlite-two-slashes",
        "credentials-in-uri", "token-in-uri", "broken-uri-with-credentials"])
def test_bad_netrain_yaml_says_what_and_how_to_fix(tmp_path: Path, text: str | bytes,
                                                   fragments: tuple[str, ...],
                                                   forbidden: tuple[str, ...]) -> None:
    path = tmp_path / "netrain.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message
    for secret in forbidden:
        assert secret not in message
