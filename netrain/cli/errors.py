"""From an exception to what the user reads: one ``netrain: error:`` line and an exit code
(NetrainError, click's usage errors, OSError, a bug), never a traceback without --debug."""

from __future__ import annotations

import errno
from typing import Any

import click

from netrain.errors import NetrainError


class OneLineError(click.ClickException):
    """A click error, shown as one ``netrain: error:`` line instead of a usage block."""

    def show(self, file: Any = None) -> None:
        click.echo(f"netrain: error: {self.message}", err=True)


class OneLineUsageError(OneLineError):
    exit_code = 2


def one_line_click(exc: click.ClickException) -> click.ClickException:
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
            raise one_line_click(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise one_line_click(exc) from None
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
                if exc.filename and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    what = f"cannot write {exc.filename}: {exc.strerror}"
                click.echo(f"netrain: error: {one_line(what)} (rerun with --debug for details)",
                           err=True)
            else:
                click.echo(f"netrain: error: unexpected {type(exc).__name__}: "
                           f"{one_line(str(exc))} (this is a bug in netrain: rerun with --debug "
                           "and report the traceback)", err=True)
            raise click.exceptions.Exit(1) from None


def one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text
