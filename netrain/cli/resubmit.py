"""netrain resubmit: one new array job with exactly the failed or lost tasks."""

from __future__ import annotations

import click

from netrain.cli.common import load_batch, warn


@click.command("resubmit")
@click.argument("batch")
@click.option("--failed", is_flag=True, required=True,
              help="Resubmit the tasks that failed, died, were cancelled or were lost.")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Where to run them (default: where the batch's jobs went).")
@click.pass_obj
def command(obj, batch, failed, models, executor) -> None:
    """Resubmit BATCH's failed tasks as one new array (e.g. --array=3,17,42) per model."""
    from netrain import dispatch, report, slurm
    from netrain.spec import parse_model_filter

    b = load_batch(obj, batch)
    selected = dispatch.select_models(b, parse_model_filter(models) if models else None)
    has_slurm = any(j.executor == "slurm" for m in selected for j in m.jobs)
    where = executor or ("slurm" if has_slurm else "local")
    views, _ = report._scheduler_views([b] if has_slurm else [], True)
    st = report._status(b, views.get(b.id))
    by_key = {m.key: m for m in st.models}
    total = 0
    for model in selected:
        failed_idx = [t.index for t in by_key[model.key].tasks if t.state.is_failure]
        if not failed_idx:
            warn(f"{model.key}: no failed tasks")
            continue
        total += len(failed_idx)
        if where == "slurm":
            slurm.submit_batch(b, [model], failed_idx, say=warn, only_failed=True)
        else:
            workers = obj.config(required=False).workers
            failures = dispatch.run_local(b, [model], failed_idx, workers,
                                          rerun=True, say=warn)
            if failures:
                raise click.exceptions.Exit(1)
    if total == 0:
        warn("nothing to resubmit")
