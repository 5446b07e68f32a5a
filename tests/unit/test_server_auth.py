"""The rules of `netrain server --auth`: which --host needs auth, credentials from the
environment only, and the Host headers a networked server answers."""

from __future__ import annotations

import socket

import pytest

from netrain.errors import UsageError
from netrain.track import server, server_auth


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_nothing(host: str) -> None:
    assert server_auth.is_loopback(host)
    server_auth.check_exposure(host, auth=False, insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "login01"])
def test_anything_else_needs_auth_or_insecure(host: str) -> None:
    assert not server_auth.is_loopback(host)
    with pytest.raises(UsageError, match=r"add --auth .* or --insecure"):
        server_auth.check_exposure(host, auth=False, insecure=False)
    server_auth.check_exposure(host, auth=True, insecure=False)
    server_auth.check_exposure(host, auth=False, insecure=True)


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(UsageError, match="needs MLFLOW_TRACKING_USERNAME and "
                                         "MLFLOW_TRACKING_PASSWORD in the environment"):
        server_auth.credentials_from_environment()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "eleven-char")
    with pytest.raises(UsageError, match="shorter than 12") as exc:
        server_auth.credentials_from_environment()
    assert "eleven-char" not in str(exc.value)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "twelve-chars")
    assert server_auth.credentials_from_environment() == server_auth.Credentials(
        "me", "twelve-chars")


def test_networked_server_answers_its_own_name() -> None:
    hosts = server.allowed_hosts("0.0.0.0", 5123)
    assert f"{socket.gethostname()}:5123" in hosts
    assert "127.0.0.1" in hosts and "10.*" in hosts  # MLflow's defaults stay
    argv = server.server_command("sqlite:////x.db", server.Path("/a"), "0.0.0.0", 5123, 1,
                                 auth=True)
    assert argv[-2:] == ["--app-name", "netrain-auth"] and "--allowed-hosts" in argv
    assert "--allowed-hosts" not in server.server_command(
        "sqlite:////x.db", server.Path("/a"), "127.0.0.1", 5123, 1)
