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
@click.option("--follow", is_flag=True,
              help="Ship BATCH's journals as they grow (default: the newest batch), for a live "
                   "view without a server, until no task is queued or running. Ctrl-C stops "
                   "between two journals.")
@click.option("--every", type=click.FloatRange(0.5), default=5.0, show_default=True,
              metavar="SECONDS", help="With --follow: seconds between two rounds.")
@click.pass_obj
def command(obj, batch, retry_for, follow, every) -> None:
    """Ship the unshipped tracking events of BATCH (default: of every batch)."""
    from netrain.define.batch import load_batches
    from netrain.track.sync import follower, sync_batch

    if follow:
        _follow(obj, batch, retry_for, every)
        return
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
    from netrain.execute.relocate import rebind

    batches = [rebind(b, project_uri(obj), warn) for b in batches]
    ours = []
    for b in batches:
        who = follower(b.path)
        if who:  # one writer: it ships this batch as it grows, and what is left at the end
            say(f"{b.id}: netrain sync --follow ({who}) ships this batch: left to it")
        else:
            ours.append(b)
    batches = ours
    if not batches:
        if broken:
            raise click.exceptions.Exit(1)
        return
    _heal(batches)
    for uri in dict.fromkeys(str(b.manifest.tracking["uri"]) for b in batches):
        _check_tracking(uri)
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
    from netrain.execute.heal import where_batches_stand

    where_batches_stand(batches)


def _follow(obj: Any, ref: str | None, retry_for: float, every: float) -> None:
    from netrain.define.batch import Batch, list_batches
    from netrain.track.sync import follow_batch

    if ref is not None:
        b = load_batch(obj, ref)
    else:
        trainings = obj.trainings_dir()
        if trainings is None:
            obj.config()  # raises the "no netrain.yaml" error
        found = list_batches(trainings)
        if not found:
            raise NetrainError(f"no batch in {trainings} to follow: run netrain generate")
        b = Batch.load(found[-1])
    from netrain.execute.slurm import sync_job_running
    from netrain.execute.status import batch_active

    uri = str(b.manifest.tracking["uri"])
    _check_tracking(uri)
    say(f"following batch {b.id}: shipping its journals to {_shown(uri)} every {every:g} s "
        "until no task is queued or running (Ctrl-C stops)")
    res = follow_batch(b.path, uri, say, active=lambda: batch_active(b),
                       sync_job_running=lambda: sync_job_running(b.id), every=every,
                       retry_for=retry_for)
    if res.interrupted:
        left = f"; {len(res.left)} journal(s) still to ship: netrain sync {b.id}" \
            if res.left else ""
        warn(f"stopped between two journals, nothing half-shipped{left}")
        raise SystemExit(130)
    if res.left:
        raise NetrainError(f"{len(res.left)} journal(s) not fully shipped (tracking "
                           f"unreachable?): run netrain sync {b.id} when it is back")
    say(f"batch {b.id}: no task queued or running, every journal shipped")


def _shown(uri: str) -> str:
    from netrain.track.server_auth import shown

    return shown(uri)


def _check_tracking(uri: str) -> None:
    """A server that refuses our credentials: one line now, not a retry loop per journal."""
    if uri.startswith(("http://", "https://")):
        from netrain.track.server_auth import refusal

        refused = refusal(uri, _shown(uri))
        if refused:
            raise NetrainError(refused)
