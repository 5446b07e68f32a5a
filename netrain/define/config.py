"""netrain.yaml -> frozen dataclasses: defaults, validation, paths resolved against the file."""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netrain import env as names
from netrain.errors import ConfigError

CONFIG_NAME = "netrain.yaml"

DEFAULT_CODE_EXCLUDE = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "*.pyc",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "mlruns",
    "mlartifacts",
    "*.db",
    "*.egg-info",
    ".ipynb_checkpoints",
)


@dataclass(frozen=True)
class Environment:
    """How a task gets its Python: the interpreter running netrain, another one, or conda."""

    kind: str  # "python" | "conda-name" | "conda-yaml"
    value: str  # interpreter path, environment name, or yaml path

    @property
    def python_bin_dir(self) -> str | None:
        return str(Path(self.value).parent) if self.kind == "python" else None


@dataclass(frozen=True)
class SlurmConfig:
    partition: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    gres: str = "gpu:1"
    account: str | None = None
    qos: str | None = None
    max_running: int | None = None
    signal: str = "B:USR1@120"
    requeue: bool = True
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskConfig:
    check: str = "warn"  # "warn" | "refuse" | "off"
    mb_per_network: float = 1.0


@dataclass(frozen=True)
class Config:
    path: Path | None
    trainings_dir: Path
    main_script: Path
    code_dir: Path
    code_exclude: tuple[str, ...]
    tracking_uri: str
    cpu_env: Environment
    gpu_env: Environment
    executor: str = "local"
    launcher: str = "mlflow"
    workers: int = 2
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    #: checkpoint settings (netrain.define.checkpoint.Policy): every_epochs, every_minutes,
    #: keep, enabled
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def environment(self, gpu: bool) -> Environment:
        return self.gpu_env if gpu else self.cpu_env


_TOP_KEYS = {
    "trainings_dir": "a directory path",
    "main_script": "a path to netrain_main.py",
    "code_dir": "a directory path",
    "code_exclude": "a list of glob patterns",
    "tracking_uri": "an MLflow tracking URI",
    "environments": "a mapping with cpu and gpu",
    "executor": "local or slurm",
    "launcher": "mlflow, mlflow-cli or direct",
    "workers": "a positive integer",
    "slurm": "a mapping",
    "disk": "a mapping",
    "checkpoint": "a mapping (every_epochs, every_minutes, keep, enabled)",
}


def find_config(start: Path | None = None) -> Path | None:
    """The netrain.yaml in ``start`` (default: cwd) or the nearest parent, or None."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | str | None = None, *, required: bool = True) -> Config:
    """Load netrain.yaml from ``path``, $NETRAIN_CONFIG, or the cwd and its parents."""
    if path is None and os.environ.get(names.CONFIG):
        path = os.environ[names.CONFIG]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist: check --config / {names.CONFIG}")
        found: Path | None = p.resolve()
    else:
        found = find_config()
        if found is None and required:
            raise ConfigError(
                f"no {CONFIG_NAME} in {Path.cwd()} or its parents: run 'netrain init DIR' "
                "to create one, or pass --config FILE"
            )
    raw: dict[str, Any] = {}
    if found is not None:
        raw = _read_yaml(found)
    base = found.parent if found is not None else Path.cwd()
    return parse_config(raw, base=base, path=found)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}: save it as UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a netrain.yaml: fix the file"
                          ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: YAML syntax error ({problem}): fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (trainings_dir: ..., ...)")
    return data


def parse_config(raw: dict[str, Any], *, base: Path, path: Path | None = None) -> Config:
    """Validate a netrain.yaml mapping; relative paths resolve against ``base``."""
    where = str(path) if path else CONFIG_NAME
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}: allowed keys are {', '.join(sorted(_TOP_KEYS))}"
        )

    def path_of(key: str, default: str) -> Path:
        value = raw.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {key} must be {_TOP_KEYS[key]}, got {value!r}")
        p = Path(os.path.expandvars(value)).expanduser()
        return (p if p.is_absolute() else base / p).resolve()

    trainings_dir = Path(os.environ[names.TRAININGS_DIR]).resolve() if os.environ.get(
        names.TRAININGS_DIR) else path_of("trainings_dir", "trainings")
    main_script = path_of("main_script", "netrain_main.py")
    code_dir = path_of("code_dir", str(main_script.parent)) if raw.get("code_dir") else (
        main_script.parent
    )
    exclude = raw.get("code_exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise ConfigError(f"{where}: code_exclude must be a list of glob patterns like "
                          f"['*.npz', 'data'], got {exclude!r}")

    env_uri = os.environ.get(names.TRACKING_URI)
    tracking_uri = env_uri or raw.get("tracking_uri")
    if tracking_uri is None:
        tracking_uri = "sqlite:///" + str(trainings_dir / "mlflow.db")
    if not isinstance(tracking_uri, str) or not tracking_uri.strip():
        raise ConfigError(f"{where}: tracking_uri must be an MLflow tracking URI")
    tracking_uri = normalise_tracking_uri(
        tracking_uri, base, f"${names.TRACKING_URI} (overrides tracking_uri)" if env_uri else where)

    envs = raw.get("environments") or {}
    if not isinstance(envs, dict) or set(envs) - {"cpu", "gpu"}:
        raise ConfigError(f"{where}: environments must be a mapping with keys cpu and gpu")
    cpu_env = parse_environment(envs.get("cpu", "python"), base, f"{where}: environments.cpu")
    gpu_env = parse_environment(envs.get("gpu", envs.get("cpu", "python")), base,
                                f"{where}: environments.gpu")

    executor = raw.get("executor", "local")
    if executor not in ("local", "slurm"):
        raise ConfigError(f"{where}: executor must be 'local' or 'slurm', got {executor!r}")
    launcher = raw.get("launcher", "mlflow")
    if launcher not in ("mlflow", "mlflow-cli", "direct"):
        raise ConfigError(f"{where}: launcher must be 'mlflow', 'mlflow-cli' or 'direct', got "
                          f"{launcher!r}")
    workers = raw.get("workers", 2)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{where}: workers must be a positive integer, got {workers!r}")

    checkpoint = raw.get("checkpoint") or {}
    try:
        from netrain.define.checkpoint import Policy

        Policy.from_mapping(checkpoint)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None

    return Config(
        checkpoint=dict(checkpoint),
        path=path,
        trainings_dir=trainings_dir,
        main_script=main_script,
        code_dir=code_dir,
        code_exclude=DEFAULT_CODE_EXCLUDE + tuple(exclude),
        tracking_uri=tracking_uri,
        cpu_env=cpu_env,
        gpu_env=gpu_env,
        executor=executor,
        launcher=launcher,
        workers=workers,
        slurm=_parse_section(SlurmConfig, raw.get("slurm"), f"{where}: slurm"),
        disk=_parse_section(DiskConfig, raw.get("disk"), f"{where}: disk"),
    )


def normalise_tracking_uri(uri: str, base: Path, where: str) -> str:
    """Make sqlite paths absolute (tasks run elsewhere) and refuse inline credentials."""
    uri = uri.strip()
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ConfigError(f"{where}: tracking_uri {_redact(uri)!r} is not a valid URI ({exc}): "
                          "fix tracking_uri") from None
    if parts.password or (parts.username and parts.scheme.startswith("http")):
        raise ConfigError(
            f"{where}: tracking_uri contains credentials: remove them and export "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
        )
    if parts.scheme == "sqlite":
        rest = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
        if rest is None:
            raise ConfigError(f"{where}: tracking_uri {uri!r}: write sqlite:///path/to/mlflow.db")
        if not rest.strip():
            raise ConfigError(f"{where}: tracking_uri {uri!r} has no database path: write "
                              "sqlite:///path/to/mlflow.db")
        if not rest.startswith("/"):
            rest = str((base / rest).resolve())
        return "sqlite:///" + rest
    if parts.scheme in ("", "file") and uri != "databricks":  # MLflow's name for Databricks
        raise ConfigError(
            f"{where}: tracking_uri {uri!r} is MLflow's deprecated file store: use "
            "sqlite:///path/mlflow.db or an http(s):// tracking server"
        )
    return uri


def _redact(uri: str) -> str:
    """``uri`` with any ``user:password@`` part masked, for error messages."""
    return re.sub(r"//[^/?#]*@", "//***@", uri)


def parse_environment(value: Any, base: Path, where: str) -> Environment:
    """``python`` | ``python:/path/to/python`` | ``conda:NAME`` | ``path/to/conda.yaml``."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be 'python', 'python:/path', 'conda:NAME' or a .yaml")
    value = value.strip()
    if value == "python":
        return Environment("python", _unresolved_executable())
    if value.startswith("python:"):
        if not value[len("python:"):].strip():
            raise ConfigError(f"{where}: 'python:' needs the interpreter's path, e.g. "
                              "python:/opt/venv/bin/python")
        p = Path(value[len("python:"):]).expanduser()
        p = p if p.is_absolute() else base / p
        return Environment("python", str(p))
    if value.startswith("conda:"):
        name = value[len("conda:"):]
        if not name or any(c in name for c in " \t\n'\"$`;&|<>"):
            raise ConfigError(f"{where}: {value!r} is not a valid conda environment name: give "
                              "the name 'conda env list' shows (no spaces, quotes or $;&|<>)")
        return Environment("conda-name", name)
    if value.endswith((".yaml", ".yml")):
        p = Path(value).expanduser()
        p = (p if p.is_absolute() else base / p).resolve()
        if not p.is_file():
            raise ConfigError(f"{where}: conda environment file {p} does not exist")
        return Environment("conda-yaml", str(p))
    raise ConfigError(
        f"{where}: {value!r} is not understood: use 'python', 'python:/path', 'conda:NAME' "
        "or a conda .yaml file"
    )


def _unresolved_executable() -> str:
    # Keep the venv's bin/python (a symlink) rather than the real interpreter, so that the
    # venv's site-packages are used on the node even though the venv is not activated.
    exe = sys.executable or "python3"
    return str(Path(exe).absolute())


def _parse_section(cls: Any, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys (one per line, e.g. "
                          f"'key: value' indented under it), got {raw!r}")
    allowed = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}: allowed keys are {', '.join(sorted(allowed))}"
            )
        default = allowed[key].default
        if key == "requeue":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.requeue must be true or false, got {value!r}")
            values[key] = value
            continue
        if key == "extra":
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ConfigError(f"{where}.extra must be a list of #SBATCH option strings")
            for line in value:
                if "\n" in line or "\r" in line:
                    raise ConfigError(f"{where}.extra: {line!r} spans lines: one option per item")
            values[key] = tuple(value)
            continue
        if value is None:
            values[key] = None
            continue
        expected = type(default) if default is not None else None
        if key in ("cpus_per_task", "max_running"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.{key} must be a positive integer, got {value!r}")
        elif key == "mb_per_network":
            if isinstance(value, str):
                # YAML 1.1 reads 1e9 (no dot, no sign) as a string: accept what is a number.
                with contextlib.suppress(ValueError):
                    value = float(value.strip())
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                0 <= value < math.inf
            ):
                raise ConfigError(f"{where}.{key} must be a number of megabytes, got {value!r}")
        elif key == "check":
            if value not in ("warn", "refuse", "off"):
                raise ConfigError(f"{where}.check must be warn, refuse or off, got {value!r}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str) or (
            expected is not None and not isinstance(value, expected)
        ):
            raise ConfigError(f"{where}.{key} must be a string, got {value!r}")
        if isinstance(value, str) and any(c in value for c in "\n\r\"'"):
            raise ConfigError(f"{where}.{key} must be on one line and without quotes (it goes "
                              f"into an #SBATCH line), got {value!r}")
        values[key] = value
    return cls(**values)
