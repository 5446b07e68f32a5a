"""netrain init: start a project with a commented netrain.yaml, netrain_main.py, models.py."""

from __future__ import annotations

from pathlib import Path

import click

from netrain.cli.common import say, warn
from netrain.errors import NetrainError

FILES = ("netrain.yaml", "netrain_main.py", "models.py")


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def command(directory: str, force: bool) -> None:
    """Write netrain.yaml, netrain_main.py and an example models.py into DIRECTORY."""
    from importlib import resources

    target = Path(directory)
    existing = [f for f in FILES if (target / f).exists()]
    if existing and not force:
        raise NetrainError(f"{target / existing[0]} already exists: use --force to overwrite, "
                           "or pick another directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            text = (resources.files("netrain") / "templates" / name).read_text(encoding="utf-8")
            (target / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NetrainError(f"cannot write into {target}: {exc.strerror}: pick another "
                           "directory") from None
    warn(f"wrote {', '.join(FILES)} in {target.resolve()}")
    warn("next: cd there and run netrain generate --models \"classifier.clu_one=2\" --run")
    say(str(target.resolve()))
