"""Helpers shared by the command modules: batch lookup, option parsing, output."""

from __future__ import annotations

from pathlib import Path

import click

from netrain.batch import Batch, find_batch
from netrain.cli import Context


def load_batch(obj: Context, ref: str) -> Batch:
    return Batch.load(find_batch(ref, obj.trainings_dir()))


def positive(ctx: click.Context, param: click.Parameter, value: object) -> object:
    if value is None:
        return value
    if isinstance(value, int) and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


def say(text: str) -> None:
    click.echo(text)


def warn(text: str) -> None:
    click.echo(f"netrain: {text}", err=True)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
