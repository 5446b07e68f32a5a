"""netrain note: annotate a batch or a run (batch.yaml and the MLflow note)."""

from __future__ import annotations

import click

from netrain.cli.common import warn
from netrain.errors import BatchError, NetrainError


@click.command("note")
@click.argument("target")
@click.argument("text")
@click.pass_obj
def command(obj, target, text) -> None:
    """Annotate TARGET (a batch id/prefix/path, or a run id) with TEXT."""
    from netrain.define.batch import Batch, find_batch, now_iso
    from netrain.results.lookup import find_run, looks_like_run_id
    from netrain.track import mlflow_store

    if not text.strip():
        raise NetrainError("the note is empty: give some text")
    batch = None
    if not looks_like_run_id(target):
        batch = Batch.load(find_batch(target, obj.trainings_dir()))
    else:
        try:
            batch = Batch.load(find_batch(target, obj.trainings_dir()))
        except BatchError:
            batch = None
    if batch is not None:
        with batch.locked() as b:
            b.manifest.notes.append({"at": now_iso(), "target": "batch", "text": text})
            b.save()
            notes = "\n\n".join(n["text"] for n in b.manifest.notes if n["target"] == "batch")
            body = (b.manifest.description + "\n\n" + notes).strip()
            mlflow_store.set_experiment_note(b.manifest.tracking["uri"],
                                         str(b.manifest.tracking["experiment_id"]), body)
        warn(f"noted on batch {batch.id}")
        return
    cfg = obj.config(required=False)
    ref = find_run(target, obj.trainings_dir(), cfg.tracking_uri if cfg.path else None)
    with ref.batch.locked() as b:
        b.manifest.notes.append({"at": now_iso(), "target": target, "text": text})
        b.save()
        old = ref.tags.get("mlflow.note.content", "")
        mlflow_store.set_run_note(ref.uri, target, (old + "\n\n" + text).strip() if old else text)
    warn(f"noted on run {target} (batch {ref.batch.id})")
