"""The `netrain` command: a click group; one small module per command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from netrain.errors import NetrainError


class Context:
    """Per-invocation state: where the config is, loaded on first use."""

    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self._config: Any = None

    def config(self, required: bool = True) -> Any:
        from netrain.config import load_config

        if self._config is None:
            self._config = load_config(self.config_path, required=required)
        return self._config

    def trainings_dir(self) -> Path | None:
        from netrain.config import find_config

        if self.config_path or find_config() is not None:
            return Path(self.config().trainings_dir)
        return None


class OneLineError(click.ClickException):
    """A click error, shown as one ``netrain: error:`` line instead of a usage block."""

    def show(self, file: Any = None) -> None:
        click.echo(f"netrain: error: {self.message}", err=True)


class OneLineUsageError(OneLineError):
    exit_code = 2


def _one_line_click(exc: click.ClickException) -> click.ClickException:
    if isinstance(exc, (OneLineError, click.exceptions.NoArgsIsHelpError)):
        return exc  # the latter is the help page of a bare `netrain` / `netrain CMD`
    message = one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return OneLineUsageError(message) if exc.exit_code == 2 else OneLineError(message)


class NetrainGroup(click.Group):
    """Turns NetrainError into one line on stderr and its exit code (no traceback); click's
    own usage errors become one line too (the option, the problem, where to read more)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            raise _one_line_click(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise _one_line_click(exc) from None
        except NetrainError as exc:
            obj = ctx.obj
            if obj is not None and getattr(obj, "debug", False):
                raise
            click.echo(f"netrain: error: {one_line(str(exc))}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            click.echo("netrain: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # Not a NetrainError: a file system problem or a bug. Still one line (the
            # traceback is one --debug away), never a half-screen of Python internals.
            obj = ctx.obj
            if obj is not None and getattr(obj, "debug", False):
                raise
            if isinstance(exc, OSError) and exc.strerror:
                what = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
                click.echo(f"netrain: error: {one_line(what)} (rerun with --debug for details)",
                           err=True)
            else:
                click.echo(f"netrain: error: unexpected {type(exc).__name__}: "
                           f"{one_line(str(exc))} (this is a bug in netrain: rerun with --debug "
                           "and report the traceback)", err=True)
            raise click.exceptions.Exit(1) from None


def one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


@click.group(cls=NetrainGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                 "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              envvar="NETRAIN_CONFIG", help="netrain.yaml to use (default: the nearest one in "
              "the current directory or its parents).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="netrain")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Train many Keras networks as SLURM array jobs (or on this machine), every network
    tracked as an MLflow run.

    \b
    Typical session:
      netrain init myproject && cd myproject
      netrain generate --models "classifier.clu_one=2, chransynth=2" --array 4 \\
          --nb-epoch 10 --epoch-samples 2000 --desc "first try" --run
      netrain show
      netrain report BATCH && netrain ui BATCH
    """
    ctx.obj = Context(config_path, debug)


def _register() -> None:
    from netrain.cli import (
        add,
        best,
        cancel,
        describe,
        generate,
        init,
        note,
        report,
        resubmit,
        retrain,
        run,
        show,
        submit,
        ui,
    )

    for mod in (init, generate, add, run, submit, show, retrain, note, cancel, resubmit,
                report, best, describe, ui):
        cli.add_command(mod.command)


_register()


def main() -> None:
    cli.main(prog_name="netrain")


if __name__ == "__main__":  # pragma: no cover
    main()
