"""Build and change batches: generate (atomic), add (under the batch lock), retrain scripts."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netrain.define import scripts as render
from netrain.define.batch import (
    Batch,
    Manifest,
    ModelEntry,
    Segment,
    atomic_write,
    lock_file,
    new_batch_id,
    now_iso,
    staging_dir,
    write_manifest,
)
from netrain.define.config import Config
from netrain.define.spec import ModelSpec
from netrain.errors import BatchError, ContractError, SpecError

Say = Callable[[str], None]
#: No SLURM cluster takes a larger array (MaxArraySize itself is at most 4,000,001).
MAX_ARRAY = 10_000_000


@dataclass(frozen=True)
class TrainOptions:
    array: int
    nb_epoch: int
    epoch_samples: int
    intelligent: bool
    pack: bool = False


def check_options(opts: TrainOptions, description: str = "") -> None:
    for name, value in (("--array", opts.array), ("--nb-epoch", opts.nb_epoch),
                        ("--epoch-samples", opts.epoch_samples)):
        if value < 1:
            raise SpecError(f"{name} must be at least 1, got {value}")
    if opts.array > MAX_ARRAY:
        raise SpecError(f"--array {opts.array} is larger than any cluster allows (at most "
                        f"{MAX_ARRAY:_}): use fewer array tasks with more networks each")
    if "\0" in description:
        raise SpecError("--desc contains a NUL character: remove it")


def artifact_location(uri: str, batch_dir: Path) -> str | None:
    """Where a batch's artifacts go: inside the batch for local backends; the server decides
    for a tracking server."""
    if uri.startswith("sqlite:") or uri.startswith(("postgresql", "mysql", "mssql")):
        return (batch_dir / "mlartifacts").as_uri()
    return None


def script_spec(batch_dir: Path, m: Manifest, model: ModelEntry, *,
                array: str | None = None, segments: tuple[Segment, ...] | None = None,
                extra_params: tuple[tuple[str, str], ...] = (), job_suffix: str = "",
                ) -> render.ScriptSpec:
    if array is None:
        array = f"0-{model.array - 1}"
        if m.slurm.get("max_running"):
            array += f"%{m.slurm['max_running']}"
    return render.ScriptSpec(
        batch_id=m.id, batch_dir=str(batch_dir), cls=model.cls, architecture=model.architecture,
        array=array, segments=segments or tuple(model.segments),
        tracking_uri=m.tracking["uri"], experiment_id=str(m.tracking["experiment_id"]),
        env_kind=m.environment["kind"], env_value=m.environment["value"], launcher=m.launcher,
        gpu=m.gpu, slurm=m.slurm, extra_params=extra_params, job_suffix=job_suffix,
    )


def write_scripts(target: Path, final: Path, m: Manifest, models: list[ModelEntry]) -> None:
    """(Re)write the given models' sbatch scripts and runbatch.sh, rendered for ``final``."""
    for model in models:
        text = render.render_sbatch(script_spec(final, m, model))
        atomic_write(target / "scripts" / f"{model.slug}-sbatch.sh", text, 0o755)
    names = [(mm.key, f"{mm.slug}-sbatch.sh") for mm in m.models]
    atomic_write(target / "runbatch.sh", render.render_runbatch(m.id, names), 0o755)


def _probe(config_code_dir: Path, main_rel: str, batch_dir: Path, batch_id: str,
           specs: list[ModelSpec], opts: TrainOptions, python: str) -> list[str]:
    from netrain.define.probe import run_probe

    request = {
        "code_dir": str(config_code_dir), "main_script": main_rel,
        "main_script_label": main_rel, "batch_dir": str(batch_dir), "batch": batch_id,
        "models": [{"cls": s.cls, "architecture": s.architecture, "nnets": s.nnets,
                    "nb_epoch": opts.nb_epoch, "epoch_samples": opts.epoch_samples,
                    "intelligent": opts.intelligent} for s in specs],
    }
    result = run_probe(request, python)
    if result.get("error"):
        raise ContractError(result["error"])
    return list(result.get("warnings") or [])


def check_disk(cfg: Config, where: Path, networks: int, say: Say) -> None:
    if cfg.disk.check == "off":
        return
    need = networks * cfg.disk.mb_per_network * 1024 * 1024
    probe_dir = where
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    free = shutil.disk_usage(probe_dir).free
    if need > free:
        msg = (f"the batch's {networks} networks need about {need / 2**30:.1f} GiB for weights "
               f"(disk.mb_per_network={cfg.disk.mb_per_network}) but {probe_dir} has "
               f"{free / 2**30:.1f} GiB free: free space, or lower --array/--models")
        if cfg.disk.check == "refuse":
            raise BatchError(msg + " (or set disk.check: warn)")
        say("warning: " + msg)


@dataclass(frozen=True)
class _Plan:
    """What generate decided before writing anything."""

    batch_id: str
    final: Path  # where the batch will lie
    main_rel: str  # the main script, relative to code_dir
    env: Any  # the tasks' environment (config.Environment)


def generate(cfg: Config, specs: list[ModelSpec], opts: TrainOptions, *, description: str,
             gpu: bool, check: bool = True, dry_run: bool = False,
             say: Say = print) -> tuple[Path, Manifest]:
    """Build a batch directory atomically; returns its final path and manifest. Four steps:
    validate (nothing written), stage (the batch in a temporary sibling), then either
    describe the dry run or commit (the experiment, then one rename)."""
    plan = _validate(cfg, specs, opts, description, gpu, dry_run, say)
    stage_parent = Path(tempfile.mkdtemp(prefix="netrain-dry-")) if dry_run else cfg.trainings_dir
    made_trainings_dir = not dry_run and not cfg.trainings_dir.exists()
    try:
        with staging_dir(stage_parent, plan.batch_id) as tmp:
            manifest = _stage(tmp, cfg, plan, specs, opts, description, gpu, check, say)
            if dry_run:
                manifest.tracking["experiment_id"] = "(created by generate)"
                write_scripts(tmp, plan.final, manifest, manifest.models)
                write_manifest(tmp, manifest)
                _describe_dry_run(tmp, plan.final, manifest, say)
            else:
                _commit(tmp, cfg, plan, manifest)
            return plan.final, manifest
    except BaseException:
        if made_trainings_dir:  # leave nothing behind, not even an empty trainings_dir
            with contextlib.suppress(OSError):
                cfg.trainings_dir.rmdir()
        raise
    finally:
        if dry_run:
            shutil.rmtree(stage_parent, ignore_errors=True)


def _validate(cfg: Config, specs: list[ModelSpec], opts: TrainOptions, description: str,
              gpu: bool, dry_run: bool, say: Say) -> _Plan:
    """Every check that needs nothing written: options, paths, the tasks' Python, free
    space, and (unless a dry run) the tracking backend."""
    check_options(opts, description)
    if not cfg.main_script.is_file():
        raise BatchError(f"main_script {cfg.main_script} does not exist: fix main_script in "
                         f"{cfg.path or 'netrain.yaml'} (or run 'netrain init')")
    if not cfg.code_dir.is_dir():
        raise BatchError(f"code_dir {cfg.code_dir} is not a directory: fix code_dir in "
                         f"{cfg.path or 'netrain.yaml'}")
    try:
        main_rel = str(cfg.main_script.relative_to(cfg.code_dir))
    except ValueError:
        raise BatchError(f"main_script {cfg.main_script} is outside code_dir {cfg.code_dir}: "
                         "move it or set code_dir to a folder holding it") from None
    env = cfg.environment(gpu)
    if env.kind == "python" and not Path(env.value).exists():
        raise BatchError(f"the task Python {env.value} does not exist: fix environments in "
                         "netrain.yaml")
    batch_id = new_batch_id()
    final = cfg.trainings_dir / batch_id
    if any(c in str(final) for c in "\n\r\"'"):
        # Checked before anything is written: the #SBATCH --chdir line cannot hold these.
        raise BatchError(f"trainings_dir {str(cfg.trainings_dir)!r} contains a quote or a "
                         "line break, which an #SBATCH line cannot hold: rename it or point "
                         "trainings_dir in netrain.yaml elsewhere")
    networks = sum(s.nnets for s in specs) * opts.array
    check_disk(cfg, cfg.trainings_dir, networks, say)
    if not dry_run:
        _check_tracking(cfg)
    return _Plan(batch_id, final, main_rel, env)


def _stage(tmp: Path, cfg: Config, plan: _Plan, specs: list[ModelSpec], opts: TrainOptions,
           description: str, gpu: bool, check: bool, say: Say) -> Manifest:
    """Write the batch into ``tmp``: the code snapshot (checked by the probe), the MLflow
    project files; return its manifest (no experiment yet, no scripts)."""
    from netrain.define.provenance import commit_line, git_state, versions
    from netrain.define.snapshot import snapshot_code

    code = snapshot_code(cfg.code_dir, tmp / "code", cfg.code_exclude,
                         skip_paths=(cfg.trainings_dir,))
    code["source"] = str(cfg.code_dir)
    code["git"] = git_state(cfg.code_dir, (cfg.trainings_dir,))
    code["git_commit"] = commit_line(code["git"])
    env = plan.env
    if check:
        python = env.value if env.kind == "python" else sys.executable
        for w in _probe(tmp / "code", plan.main_rel, tmp, plan.batch_id, specs, opts, python):
            say("warning: " + w)
    (tmp / "mlproject").mkdir()
    atomic_write(tmp / "mlproject" / "entry.py", template("entry.py"))
    atomic_write(tmp / "MLproject", render.render_mlproject())
    atomic_write(tmp / "conda.yaml", conda_yaml(gpu, env))
    created = now_iso()
    models = [ModelEntry(s.cls, s.architecture, [Segment(
        0, opts.array, s.nnets, opts.nb_epoch, opts.epoch_samples, opts.intelligent,
        created, opts.pack)]) for s in specs]
    slurm = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg.slurm).items()}
    art = artifact_location(cfg.tracking_uri, plan.final)
    return Manifest(
        id=plan.batch_id, description=description, created=created,
        netrain_version=_version(), gpu=gpu, main_script=plan.main_rel, code=code,
        tracking={"uri": cfg.tracking_uri, "experiment_id": "", "artifact_location": art},
        environment={"kind": env.kind, "value": env.value}, launcher=cfg.launcher,
        slurm=slurm, models=models, checkpoint=dict(cfg.checkpoint), versions=versions(),
    )


def _commit(tmp: Path, cfg: Config, plan: _Plan, manifest: Manifest) -> None:
    """Create the batch's experiment, write its scripts and manifest, and move the staged
    batch to its place in one rename; the experiment is deleted again if that fails."""
    from netrain.define.provenance import experiment_tags
    from netrain.track import mlflow_store

    for model in manifest.models:  # a value no script can hold fails here, before MLflow
        render.render_sbatch(script_spec(plan.final, manifest, model))
    with lock_file(cfg.trainings_dir / ".mlflow-init.lock"):
        experiment_id = mlflow_store.create_batch_experiment(
            cfg.tracking_uri, plan.batch_id, manifest.description,
            manifest.tracking["artifact_location"],
            {"netrain.batch_dir": str(plan.final), "netrain.batch": plan.batch_id,
             **experiment_tags(manifest.versions, manifest.code["git"])},
        )
    try:
        manifest.tracking["experiment_id"] = experiment_id
        write_scripts(tmp, plan.final, manifest, manifest.models)
        write_manifest(tmp, manifest)
        os.rename(tmp, plan.final)
    except BaseException:
        if not plan.final.exists():
            mlflow_store.delete_experiment(cfg.tracking_uri, experiment_id)
        raise


def _check_tracking(cfg: Config) -> None:
    """Fail on an unreachable tracking backend before anything is written."""
    from netrain.track import mlflow_store

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).parent == \
            cfg.trainings_dir and not cfg.trainings_dir.exists():
        return  # the default database: its directory is made with the first batch
    mlflow_store.check_reachable(uri)


def _describe_dry_run(tmp: Path, final: Path, m: Manifest, say: Say) -> None:
    say(f"dry run: would create batch {m.id} at {final} ({m.networks} networks)")
    for p in sorted(tmp.rglob("*")):
        if p.is_file() and "code" not in p.relative_to(tmp).parts[:1]:
            say(f"  would write {final / p.relative_to(tmp)}")
    say(f"  would snapshot {m.code['files']} file(s) of code from {m.code['source']}")
    for model in m.models:
        say(f"  would submit: sbatch {final / 'scripts' / (model.slug + '-sbatch.sh')}  "
            f"(array 0-{model.array - 1}, {model.segments[0].nnets} networks per task)")
    say("--- scripts/" + m.models[0].slug + "-sbatch.sh ---")
    say((tmp / "scripts" / f"{m.models[0].slug}-sbatch.sh").read_text())


def add(batch: Batch, cfg_python: str, specs: list[ModelSpec], opts: TrainOptions, *,
        check: bool = True, say: Say = print) -> list[tuple[ModelEntry, Segment]]:
    """Add models, or more array tasks of existing models, under the batch lock."""
    check_options(opts)
    with batch.locked() as b:
        m = b.manifest
        if check:
            for w in _probe(b.path / "code", m.main_script, b.path, m.id, specs, opts,
                            cfg_python):
                say("warning: " + w)
        added: list[tuple[ModelEntry, Segment]] = []
        changed: list[ModelEntry] = []
        for s in specs:
            existing = next((x for x in m.models if x.key == s.key), None)
            model = existing or ModelEntry(s.cls, s.architecture)
            seg = Segment(model.array, opts.array, s.nnets, opts.nb_epoch, opts.epoch_samples,
                          opts.intelligent, now_iso(), opts.pack)
            model.segments.append(seg)
            if existing is None:
                m.models.append(model)
            changed.append(model)
            added.append((model, seg))
        write_scripts(b.path, b.path, m, changed)
        b.save()
    batch.manifest = b.manifest
    return added


def retrain_script(batch: Batch, model: ModelEntry, trainingrun: int, net_index: int,
                   run_id: str, nb_epoch: int | None, from_weights: Path | None) -> Path:
    """Write scripts/retrain-<run>.sh: the model's script for one index and one network."""
    seg = model.segment_for(trainingrun)
    text_seg = Segment(trainingrun, 1, seg.nnets, nb_epoch or seg.nb_epoch, seg.epoch_samples,
                       seg.intelligent,
                       pack=seg.pack)
    extra = [("net_index", str(net_index)), ("retrain_of", run_id)]
    if from_weights is not None:
        extra.append(("from_weights", str(from_weights)))
    with batch.locked() as b:
        n = sum(1 for r in b.manifest.retrains if r.get("of") == run_id) + 1
        suffix = f"-retrain{n}"
        spec = script_spec(b.path, b.manifest, model, array=str(trainingrun),
                           segments=(text_seg,), extra_params=tuple(extra), job_suffix=suffix)
        path = b.path / "scripts" / f"retrain-{run_id[:12]}-{n}.sh"
        atomic_write(path, render.render_sbatch(spec), 0o755)
        b.manifest.retrains.append({
            "of": run_id, "model": model.key, "trainingrun": trainingrun,
            "net_index": net_index, "script": str(path.relative_to(b.path)),
            "nb_epoch": nb_epoch or seg.nb_epoch,
            "from_weights": str(from_weights) if from_weights else None, "created": now_iso(),
        })
        b.save()
    batch.manifest = b.manifest
    return path


def conda_yaml(gpu: bool, env: Any) -> str:
    if env.kind == "conda-yaml":
        return Path(env.value).read_text(encoding="utf-8")
    return template("conda-gpu.yaml" if gpu else "conda-cpu.yaml")


def template(name: str) -> str:
    """A file of netrain/templates (entry.py there is a link to the repository's
    mlproject/entry.py: one source, shipped inside the package)."""
    from importlib import resources

    return (resources.files("netrain") / "templates" / name).read_text(encoding="utf-8")


def _version() -> str:
    from netrain.version import __version__

    return __version__

