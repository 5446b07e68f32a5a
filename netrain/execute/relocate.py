"""A batch moved or copied to another directory: where it was made, what it still names
outside itself (its tracking store and artifact location, its Python), and binding it to
where it lies now before anything is trained or shipped, so it never writes into the old one.

Inside the batch every script finds its own directory at run time (render.py); what
batch.yaml and the scripts' text name is rewritten here. The tracking store is outside any
batch: a moved batch whose store is the current project's keeps it; one whose store is
another's (a copied project) gets an experiment of its own in this project's store, and its
journals are shipped there. Where MLflow cannot follow (an experiment's artifact location is
fixed at its creation, in the same store), the batch is refused with the fix.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from netrain.define.batch import Batch
from netrain.errors import BatchError


def made_in(batch: Batch) -> Path | None:
    """The directory the batch's scripts were written for (None: no script says)."""
    for model in batch.manifest.models:
        try:
            text = batch.script_path(model).read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("batch_dir="):
                words = shlex.split(line[len("batch_dir="):])
                return Path(words[0]) if words else None
    return None


def moved_from(batch: Batch) -> Path | None:
    """Where the batch was made, when that is not where it lies now."""
    old = made_in(batch)
    if old is None:
        return None
    try:
        if old.resolve() == batch.path.resolve() or (old.exists() and
                                                     os.path.samefile(old, batch.path)):
            return None
    except OSError:
        pass
    return old


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def outside(batch: Batch, old: Path) -> list[str]:
    """What the moved batch still names outside itself: one phrase each."""
    t = batch.manifest.tracking
    out = []
    uri = str(t.get("uri") or "")
    if uri:
        out.append(f"its tracking store {uri}" + ("" if _store_exists(uri) else " (missing)"))
    art = str(t.get("artifact_location") or "")
    if art.startswith("file://") and Path(art[len("file://"):]).is_relative_to(old):
        out.append(f"its MLflow artifacts in {art[len('file://'):]}")
    env = batch.manifest.environment
    if env.get("kind") == "python" and not Path(env.get("value", "")).exists():
        out.append(f"its Python {env.get('value')} (missing)")
    return out


def _store_exists(uri: str) -> bool:
    f = _sqlite_file(uri)
    return f is None or f.is_file()


def flag(batch: Batch) -> str:
    """show's line for a moved batch ("" when it was not moved)."""
    old = moved_from(batch)
    if old is None:
        return ""
    names = outside(batch, old)
    what = f"; it still names {', '.join(names)}" if names else ""
    return (f"batch {batch.id} was moved or copied from {old}{what}: netrain run, submit or "
            "sync binds it to where it lies now")


def rebind(batch: Batch, project_uri: str | None, say: Callable[[str], None]) -> Batch:
    """Bind a moved batch to where it lies: its scripts and batch.yaml rewritten for this
    directory; its tracking moved to ``project_uri`` (this project's store) when it named
    another store. Refuses (BatchError, with the fix) what cannot be rebound. Returns the
    batch as it is now (unchanged when it was not moved)."""
    old = moved_from(batch)
    if old is None:
        return batch
    from netrain.define import builder

    env = batch.manifest.environment
    if env.get("kind") == "python" and not Path(env.get("value", "")).exists():
        raise BatchError(f"batch {batch.id} was moved from {old} and its Python "
                         f"{env.get('value')} does not exist here: edit environment.value in "
                         f"{batch.path / 'batch.yaml'} to this machine's Python")
    with batch.locked() as b:
        t = b.manifest.tracking
        uri = str(t.get("uri") or "")
        art = str(t.get("artifact_location") or "")
        new_art = builder.artifact_location(uri, b.path) if uri else None
        if project_uri and uri and project_uri != uri:
            from netrain.track import mlflow_store

            new_art = builder.artifact_location(project_uri, b.path)
            exp = mlflow_store.create_batch_experiment(
                project_uri, b.id, b.manifest.description, new_art,
                {"netrain.batch_dir": str(b.path), "netrain.batch": b.id,
                 "netrain.moved_from": str(old)})
            t.update({"uri": project_uri, "experiment_id": exp,
                      "artifact_location": new_art, "rebound_from": uri})
            say(f"batch {b.id} was moved from {old}: its tracking now goes to "
                f"{project_uri} (experiment {exp}), not to {uri}")
        elif art.startswith("file://") and Path(art[len("file://"):]).is_relative_to(old) \
                and new_art != art:
            raise BatchError(
                f"batch {b.id} was moved from {old}, but its MLflow experiment in {uri} keeps "
                f"its artifacts in {art[len('file://'):]} (MLflow cannot move them): move the "
                f"batch back to {old}, or run it from a project whose tracking_uri is "
                "another store (it then gets an experiment there)")
        builder.write_scripts(b.path, b.path, b.manifest, list(b.manifest.models))
        b.save()
        say(f"batch {b.id} was moved from {old}: its scripts now run it in "
            f"{b.path}")
    return Batch.load(batch.path)
