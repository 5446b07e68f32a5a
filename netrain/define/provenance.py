"""Where a batch's results came from: package versions and the git state of the user's code
(read without importing the packages)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_BACKEND_DISTS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"),
    "jax": ("jax",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "openvino": ("openvino",),
}


def keras_backend() -> str:
    """The Keras backend a task will use (KERAS_BACKEND, else ~/.keras/keras.json, else
    tensorflow), as Keras itself decides it, without importing Keras."""
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text())["backend"])
    except (OSError, ValueError, KeyError, TypeError):
        return "tensorflow"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def backend_package() -> str:
    """The installed distribution that provides the Keras backend (e.g. tensorflow-cpu)."""
    for dist in _BACKEND_DISTS.get(keras_backend(), (keras_backend(),)):
        if _version(dist):
            return dist
    return keras_backend()


def versions() -> dict[str, str]:
    """python, numpy, keras, the backend's package, mlflow, netrain: name -> version."""
    out = {"python": platform.python_version()}
    for dist in ("numpy", "keras", backend_package(), "mlflow", "netrain"):
        out[dist] = _version(dist) or "not installed"
    out["keras_backend"] = keras_backend()
    return out


def _git(path: Path, *args: str) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def git_state(path: Path, exclude: tuple[Path, ...] = ()) -> dict[str, Any]:
    """commit, branch and dirty flag of the git checkout holding ``path`` ({} if none);
    changes under ``exclude`` (the trainings dir) do not count as dirty."""
    commit = _git(path, "rev-parse", "HEAD")
    if not commit:
        return {}
    branch = _git(path, "rev-parse", "--abbrev-ref", "HEAD") or ""
    skip = []
    for p in exclude:
        try:
            skip.append(f":(exclude){Path(p).resolve().relative_to(Path(path).resolve())}")
        except ValueError:
            continue
    status = _git(path, "status", "--porcelain", "--", ".", *skip)
    return {"commit": commit, "branch": "" if branch == "HEAD" else branch,
            "dirty": bool(status)}


def commit_line(git: dict[str, Any]) -> str | None:
    """``git_state`` as the manifest's one-line ``git_commit``: the commit, '+dirty' if
    modified (the trainings directory's changes not counted), None outside git."""
    if not git:
        return None
    return str(git["commit"]) + ("+dirty" if git.get("dirty") else "")


def experiment_tags(versions_: dict[str, str], git: dict[str, Any]) -> dict[str, str]:
    """The same facts as MLflow experiment tags (``netrain.version.<pkg>``, ``netrain.git.*``)."""
    tags = {f"netrain.version.{k}": str(v) for k, v in versions_.items()}
    for k, v in git.items():
        tags[f"netrain.git.{k}"] = str(v).lower() if isinstance(v, bool) else str(v)
    return tags
