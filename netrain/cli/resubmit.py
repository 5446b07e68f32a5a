"""netrain resubmit: one new array job with exactly the failed or lost tasks."""

from __future__ import annotations

import click

from netrain.cli.common import EXECUTOR, POSITIVE, TaskProgress, load_batch, project_uri, warn


@click.command("resubmit")
@click.argument("batch")
@click.option("--failed", is_flag=True,
              help="The tasks that failed, died, were cancelled or were lost: what resubmit "
              "always takes (accepted for the spelling show suggests).")
@click.option("--models", default=None, metavar="CLASS.ARCH,...", help="Only these models.")
@click.option("--executor", "where", type=EXECUTOR, default=None,
              help="Where to run them (default: where the batch's jobs went).")
@click.option("--workers", "-j", type=POSITIVE, default=None,
              help="Local executor: tasks at a time (default: workers in netrain.yaml, else 2).")
@click.pass_obj
def command(obj, batch, failed, models, where, workers) -> None:
    """Resubmit BATCH's failed tasks as one new array (e.g. --array=3,17,42) per model."""
    from netrain.define.spec import parse_model_filter
    from netrain.execute import executor as ex
    from netrain.execute.heal import where_batches_stand

    wanted = parse_model_filter(models) if models else None
    b = load_batch(obj, batch)
    keys = [m.key for m in ex.select_models(b, wanted)]
    _, (st,) = where_batches_stand([b])
    failed_idx = {m.key: [t.index for t in m.tasks if t.state.is_failure]
                  for m in st.models if m.key in keys}
    for key in keys:
        if not failed_idx[key]:
            warn(f"{key}: no failed tasks")
    todo = {k: v for k, v in failed_idx.items() if v}
    if not todo:
        warn("nothing to resubmit")
        return
    started = ex.start(b, where or ex.default_executor(b), ex.Selection(todo, False, rerun=False),
                       workers=workers or obj.config(required=False).workers, say=warn,
                       progress=TaskProgress(), project_uri=project_uri(obj))
    if started.failures or started.interrupted:
        raise click.exceptions.Exit(1)
