"""The CLI is uniform: every option has help text and is in the README, shared options are
spelt the same on every command, and the --models filter refuses counts."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netrain.cli import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _options() -> list[tuple[str, click.Option]]:
    return [(name, p) for name, cmd in sorted(cli.commands.items()) for p in cmd.params
            if isinstance(p, click.Option)]


def test_every_option_has_help() -> None:
    missing = [f"{name} {p.opts[0]}" for name, p in _options() if not p.help]
    assert missing == []


def test_every_option_is_in_the_readme() -> None:
    missing = [f"netrain {name} {p.opts[0]}" for name, p in _options()
               if not any(o in README for o in p.opts if o.startswith("--"))]
    assert missing == []


@pytest.mark.parametrize("option, commands", [
    ("--workers", ["generate", "add", "run", "resubmit"]),
    ("--tasks", ["run", "submit", "cancel"]),
    ("--models", ["run", "submit", "cancel", "resubmit"]),
    ("--executor", ["generate", "add", "retrain"]),
])
def test_shared_options_are_everywhere_and_alike(option: str, commands: list[str]) -> None:
    found = {}
    for name in commands:
        opts = {o: p for p in cli.commands[name].params for o in p.opts}
        assert option in opts, f"netrain {name} has no {option}"
        found[name] = tuple(sorted(opts[option].opts))
    assert len(set(found.values())) == 1, found


def test_run_is_a_value_or_a_flag_on_generate_and_add() -> None:
    for name in ("generate", "add"):
        p = next(p for p in cli.commands[name].params if "--run" in p.opts)
        assert isinstance(p.type, click.types.BoolParamType) and not p.is_flag
        assert p.flag_value is True  # `--run` alone, and `--run True` as the guide writes it


def test_resubmit_needs_no_failed_flag() -> None:
    p = next(p for p in cli.commands["resubmit"].params if "--failed" in p.opts)
    assert not p.required


def test_ui_and_server_default_to_different_ports() -> None:
    def port(name: str) -> int:
        return next(p.default for p in cli.commands[name].params if "--port" in p.opts)
    assert port("ui") != port("server")


@pytest.mark.parametrize("command", ["run", "submit", "cancel", "resubmit"])
def test_models_filter_with_a_count_is_an_error(command: str, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, [command, "nosuchbatch", "--models", "classifier.clu_one=10"])
    # the filter is parsed before the batch is looked up: the count is named, not dropped
    assert r.exit_code == 2 and "has a count" in r.output, r.output  # a usage error


def test_run_rerun_help_says_it_starts_new_runs() -> None:
    p = next(p for p in cli.commands["run"].params if "--rerun" in p.opts)
    assert "new MLflow runs" in (p.help or "") and "checkpoints ignored" in (p.help or "")
