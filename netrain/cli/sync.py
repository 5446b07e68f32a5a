"""netrain sync: ship to MLflow every tracking event a batch's journals hold that MLflow
has not got yet (after an outage, a killed shipper, or a batch trained offline)."""

from __future__ import annotations

from typing import Any

import click

from netrain.cli.common import load_batch, say, warn
from netrain.errors import NetrainError


@click.command("sync")
@click.argument("batch", required=False)
@click.option("--retry-for", type=click.FloatRange(0), default=30.0, show_default=True,
              metavar="SECONDS", help="Give up on a journal when tracking has failed this "
              "long (what is left stays for the next sync).")
@click.pass_obj
def command(obj, batch, retry_for) -> None:
    """Ship the unshipped tracking events of BATCH (default: of every batch)."""
    from netrain.batch import load_batches
    from netrain.sync import sync_batch

    broken: list[str] = []
    if batch is not None:
        batches = [load_batch(obj, batch)]
    else:
        trainings = obj.trainings_dir()
        if trainings is None:
            obj.config()  # raises the "no netrain.yaml" error
        # as show does: an unreadable batch is named and skipped, the others are shipped
        batches, broken = load_batches(trainings)
        for line in broken:
            warn(f"skipped {line}")
    from netrain.cli.common import project_uri
    from netrain.relocate import rebind

    batches = [rebind(b, project_uri(obj), warn) for b in batches]
    _heal(batches)
    shipped = busy = 0
    incomplete: list[str] = []
    for b in batches:
        res = sync_batch(b.path, str(b.manifest.tracking["uri"]), say, retry_for=retry_for)
        shipped += res.shipped
        busy += res.busy
        incomplete += res.incomplete
    if not shipped and not busy:
        say("nothing to ship: every journal is in MLflow")
        if broken:
            raise click.exceptions.Exit(1)
        return
    if incomplete:
        raise NetrainError(f"{len(incomplete)} journal(s) not fully shipped (tracking "
                           "unreachable?): run netrain sync again when it is back")
    if busy:
        warn(f"{busy} journal(s) are being shipped by their task right now")
    if broken:
        raise click.exceptions.Exit(1)


def _heal(batches: list[Any]) -> None:
    """Close (in their journals) the runs of tasks that died without a word, as `show` does,
    so that what sync ships leaves no run RUNNING."""
    from netrain import executor
    from netrain.heal import heal
    from netrain.status import batch_status

    asked = [b for b in batches if executor.has_slurm_jobs(b)]
    view = executor.scheduler_view(asked)
    for b in batches:
        heal(b, batch_status(b, view.tasks.get(b.id)), view.retrains.get(b.id))
