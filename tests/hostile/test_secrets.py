"""Secrets: credentials never go into netrain.yaml's tracking URI, and the MLflow credentials
of the environment never reach a batch's files, its scripts, its logs or the database.

(netrain starts no server of its own - the tracking server is the user's - so there is no
listening socket whose address could be checked here.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netrain.define.config import normalise_tracking_uri
from netrain.errors import ConfigError
from tests.hostile.conftest import Template, nr

SECRET_PW = "pw-7c1e9b2d-secret"
SECRET_TOKEN = "tok-4f6a0c3e-secret"


@pytest.mark.parametrize("uri", [
    f"http://alice:{SECRET_PW}@mlflow.example.org:5000",
    f"https://alice:{SECRET_PW}@mlflow.example.org/prefix",
    f"https://{SECRET_TOKEN}@mlflow.example.org",
    f"https://:{SECRET_TOKEN}@mlflow.example.org",
    f"HTTPS://alice:{SECRET_PW}@mlflow.example.org",
    f"postgresql://alice:{SECRET_PW}@db.example.org/mlflow",
    f"mysql+pymysql://alice:{SECRET_PW}@db.example.org/mlflow",
    f"http://alice:{SECRET_PW.replace('-', '%2D')}@mlflow.example.org",
    f"  http://alice:{SECRET_PW}@mlflow.example.org  ",
])
def test_credentials_in_the_tracking_uri_are_refused_and_not_echoed(uri: str) -> None:
    with pytest.raises(ConfigError, match="contains credentials") as exc:
        normalise_tracking_uri(uri, Path("/p"), "netrain.yaml")
    message = str(exc.value)
    assert "MLFLOW_TRACKING_PASSWORD" in message and "MLFLOW_TRACKING_TOKEN" in message
    for secret in (SECRET_PW, SECRET_TOKEN, SECRET_PW.replace("-", "%2D"), "alice"):
        assert secret not in message


@pytest.mark.parametrize("uri", [f"http://alice:{SECRET_PW}@[::1", f"http://u:{SECRET_PW}@[x]"])
def test_a_malformed_uri_is_refused_without_echoing_its_password(uri: str) -> None:
    with pytest.raises(ConfigError) as exc:
        normalise_tracking_uri(uri, Path("/p"), "netrain.yaml")
    assert SECRET_PW not in str(exc.value)


@pytest.mark.parametrize("uri", ["http://mlflow.example.org:5000", "https://mlflow.example.org",
                                 "databricks", "databricks://profile",
                                 "sqlite:////abs/mlflow.db"])
def test_uris_without_credentials_are_kept(uri: str) -> None:
    assert normalise_tracking_uri(uri, Path("/p"), "netrain.yaml") == uri


@pytest.mark.slow  # trains one (tiny) network
def test_environment_credentials_never_reach_files_logs_or_database(template: Template,
                                                                   tmp_path: Path) -> None:
    """A tiny batch trained locally (direct launcher, one epoch) with MLflow credentials in the
    environment: no file of the project - manifest, scripts, logs, records, metrics, the
    database, the artifacts - and no output holds them."""
    proj = tmp_path / "proj"
    shutil.copytree(template.path, proj, symlinks=True)
    env = {"MLFLOW_TRACKING_USERNAME": "alice-user-5d2b", "MLFLOW_TRACKING_PASSWORD": SECRET_PW,
           "MLFLOW_TRACKING_TOKEN": SECRET_TOKEN}
    r = nr("generate", "--models", "regressor.narrow=1", "--array", "1", "--nb-epoch", "1",
           "--epoch-samples", "64", "--desc", "secrets", cwd=proj, env=env, timeout=300)
    assert r.code == 0, r.text
    outputs = [r.text]
    batch = Path(r.out.strip().splitlines()[-1])
    r = nr("run", batch.name, cwd=proj, env=env, timeout=300)
    assert r.code == 0, r.text
    outputs.append(r.text)
    r = nr("show", batch.name, "--all", "--no-scheduler", cwd=proj, env=env)
    assert r.code == 0 and "finished" in r.out, r.text
    outputs.append(r.text)
    assert list((batch / "weights").glob("*.weights.h5")), "nothing was trained"
    assert list((batch / "logs").iterdir()), "the task left no log"
    files = [p for p in proj.rglob("*") if p.is_file()]
    for secret in (SECRET_PW, SECRET_TOKEN, "alice-user-5d2b"):
        for text in outputs:
            assert secret not in text
        for p in files:
            assert secret.encode() not in p.read_bytes(), f"{secret} leaked into {p}"
