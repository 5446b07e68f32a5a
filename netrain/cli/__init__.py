"""The `netrain` command: the click group and the list of commands (one module each)."""

from __future__ import annotations

import click

from netrain import env as names
from netrain.cli.context import Context
from netrain.cli.errors import NetrainGroup


@click.group(cls=NetrainGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                 "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              envvar=names.CONFIG, help="netrain.yaml to use (default: the nearest one in "
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
        check,
        describe,
        generate,
        init,
        note,
        report,
        resubmit,
        retrain,
        run,
        server,
        show,
        submit,
        sync,
        ui,
    )

    for mod in (init, generate, add, run, submit, show, retrain, note, cancel, resubmit, sync,
                server, report, best, describe, ui, check):
        cli.add_command(mod.command)


_register()


def main() -> None:
    """The ``netrain`` script: the command, then an exit without the interpreter's teardown
    of what the command imported (MLflow: ~1.2 s; see netrain.exits)."""
    from netrain.exits import run_main

    run_main(lambda: cli.main(prog_name="netrain"))


if __name__ == "__main__":  # pragma: no cover
    main()
