"""Pure text builders: sbatch scripts, runbatch.sh, the batch's MLproject. No I/O here."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netrain.define.batch import Segment
from netrain.define.params import OPTIONAL_DEFAULTS, TASK_PARAM_NAMES
from netrain.errors import BatchError
from netrain.track import plan as ship_plan


def q(value: object) -> str:
    """Shell-quote any value for a script."""
    return shlex.quote(str(value))


def directive(value: object) -> str:
    """A value for an ``#SBATCH`` line: sbatch reads these itself, not through a shell."""
    text = str(value)
    if any(c in text for c in "\n\r\"'"):
        raise BatchError(f"cannot put {text!r} in an #SBATCH line: remove quotes and newlines")
    return f'"{text}"' if any(c.isspace() for c in text) else text


@dataclass(frozen=True)
class ScriptSpec:
    """Everything an sbatch script needs, as plain data."""

    batch_id: str
    batch_dir: str
    cls: str
    architecture: str
    array: str  # the --array value, e.g. "0-199" or "0-199%4"
    segments: tuple[Segment, ...]
    tracking_uri: str
    experiment_id: str
    env_kind: str  # python | conda-name | conda-yaml
    env_value: str
    launcher: str = "mlflow"  # mlflow | mlflow-cli | direct
    gpu: bool = False
    slurm: Mapping[str, object] = field(default_factory=dict)
    extra_params: tuple[tuple[str, str], ...] = ()
    job_suffix: str = ""

    @property
    def job_name(self) -> str:
        return f"{self.cls}-{self.architecture}{self.job_suffix}-{self.batch_id}"


def sbatch_directives(spec: ScriptSpec) -> list[str]:
    s = spec.slurm
    lines = [
        f"--job-name={spec.job_name}",
        f"--array={spec.array}",
        f"--chdir={directive(spec.batch_dir)}",
        "--output=logs/%x_%A_%a.log",
        "--error=logs/%x_%A_%a.log",
    ]
    if s.get("signal"):
        lines.append(f"--signal={directive(s['signal'])}")
    if s.get("requeue", True):
        lines.append("--requeue")
        lines.append("--open-mode=append")  # a requeued attempt adds to the log, not over it
    for key, opt in (("partition", "partition"), ("time", "time"), ("mem", "mem"),
                     ("cpus_per_task", "cpus-per-task"), ("account", "account"), ("qos", "qos")):
        if s.get(key) is not None:
            lines.append(f"--{opt}={directive(s[key])}")
    if spec.gpu:
        lines.append(f"--gres={directive(s.get('gres') or 'gpu:1')}")
    out = [f"#SBATCH {line}" for line in lines]
    extras: Any = s.get("extra") or ()
    for extra in extras:
        text = str(extra).strip()
        if "\n" in text or "\r" in text:
            raise BatchError(f"extra #SBATCH option {text!r} spans lines")
        out.append(f"#SBATCH {text if text.startswith('-') else '--' + text}")
    return out


def sync_job(spec: ScriptSpec) -> tuple[list[str], str] | None:
    """The sbatch options and the command of a batch's sync job, which runs after its arrays
    and ships what their short tasks left in their journals (`netrain sync`); None where the
    task environment is built by MLflow (conda-yaml) or the launcher is MLflow's CLI, whose
    tasks ship for themselves (netrain.track.plan decides)."""
    if not ship_plan.leaves_to_sync_job(spec.launcher, spec.env_kind):
        return None
    s = spec.slurm
    opts = [f"--job-name=sync-{spec.batch_id}", f"--chdir={spec.batch_dir}",
            "--output=logs/sync_%j.log", "--error=logs/sync_%j.log"]
    for key, opt in (("partition", "partition"), ("time", "time"), ("account", "account"),
                     ("qos", "qos")):
        if s.get(key) is not None:
            opts.append(f"--{opt}={s[key]}")
    env_lines, python = _environment_lines(spec)
    command = "; ".join([*env_lines, f"exec {python} -m netrain sync {q(spec.batch_dir)}"])
    return opts, command


def _segment_case(spec: ScriptSpec) -> list[str]:
    out: list[str] = []
    for i, seg in enumerate(spec.segments):
        kw = "if" if i == 0 else "elif"
        out.append(
            f'{kw} [ "$index" -ge {seg.start} ] && [ "$index" -lt {seg.stop} ]; then '
            f"nnets={seg.nnets}; nb_epoch={seg.nb_epoch}; epoch_samples={seg.epoch_samples}; "
            f"intelligent={'true' if seg.intelligent else 'false'}; "
            f"pack={'true' if seg.pack else 'false'}"
        )
    out.append("else")
    model = q(f"{spec.cls}.{spec.architecture}")
    out.append(f'  echo "netrain: array index $index is not a task of "{model} >&2; exit 2')
    out.append("fi")
    return out


def _environment_lines(spec: ScriptSpec) -> tuple[list[str], str]:
    return environment_lines(spec.env_kind, spec.env_value)


def environment_lines(env_kind: str, env_value: str) -> tuple[list[str], str]:
    """Lines that make the task's Python available, and the python command to use (the
    scripts' and `netrain check`'s)."""
    if env_kind == "python":
        bindir = env_value.rsplit("/", 1)[0] if "/" in env_value else ""
        lines = [f"export PATH={q(bindir)}:\"$PATH\""] if bindir else []
        return lines, q(env_value)
    if env_kind == "conda-name":
        return [
            'eval "$(conda shell.bash hook)"',
            f"conda activate {q(env_value)}",
        ], "python"
    return [], "python"


def task_command(spec: ScriptSpec, python: str) -> list[str]:
    """The command (as script text tokens) that runs one array task."""
    values = {
        "class": q(spec.cls),
        "architecture": q(spec.architecture),
        "nb_epoch": '"$nb_epoch"',
        "epoch_samples": '"$epoch_samples"',
        "nnets": '"$nnets"',
        "intelligent": '"$intelligent"',
        "trainingrun": '"$index"',
        "pack": '"$pack"',
    }
    for key, value in spec.extra_params:
        if key not in OPTIONAL_DEFAULTS:
            raise BatchError(f"unknown task parameter {key!r}")
        values[key] = q(value)
    if spec.launcher == "direct":
        cmd = [python, "mlproject/entry.py"]
        for key in TASK_PARAM_NAMES:
            if key in values:
                cmd += [f"--{key.replace('_', '-')}", values[key]]
        return cmd
    env_manager = "conda" if spec.env_kind == "conda-yaml" else "local"
    if spec.launcher == "mlflow-cli" or spec.env_kind == "conda-yaml":
        # the literal `mlflow run` command
        cmd = [python if spec.env_kind != "conda-yaml" else "mlflow"]
        if spec.env_kind != "conda-yaml":
            cmd += ["-m", "mlflow"]
        cmd += ["run"]
    else:
        # the same MLflow project run through the Projects API, without the CLI's start-up
        cmd = [python, "-m", "netrain.execute.launcher"]
    cmd += ['"$batch_dir"', "-e", "train", "--env-manager", env_manager,
            "--experiment-id", '"$MLFLOW_EXPERIMENT_ID"']
    for key in TASK_PARAM_NAMES:
        if key in values:
            cmd += ["-P", f"{key}={values[key]}"]
    return cmd


def render_sbatch(spec: ScriptSpec) -> str:
    """The sbatch script of one model (also run as-is by the local executor)."""
    env_lines, python = _environment_lines(spec)
    cmd = task_command(spec, python)
    lines = [
        "#!/bin/bash",
        *sbatch_directives(spec),
        f"# netrain batch {spec.batch_id}: model {spec.cls}.{spec.architecture}.",
        "# 'bash <this script>' submits the array with sbatch (as runbatch.sh and netrain",
        "# submit do); under sbatch it trains one array task; netrain run runs it locally.",
        "set -u",
        f"batch_dir={q(spec.batch_dir)}",
        "# a batch moved or copied works where it lies: its own directory, found at run time",
        "# (under SLURM the script runs as a copy, in --chdir, which submit sets to it)",
        'here=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)',
        'if [ -n "${SLURM_JOB_ID:-}" ] && [ -f "$PWD/batch.yaml" ]; then batch_dir=$PWD',
        'elif [ -f "$here/batch.yaml" ]; then batch_dir=$here; fi',
        *_submit_lines(spec),
        'cd "$batch_dir" || exit 2',
        f"export MLFLOW_TRACKING_URI={q(spec.tracking_uri)}",
        f"export MLFLOW_EXPERIMENT_ID={q(spec.experiment_id)}",
        "export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true",
        *_one_writer_lines(spec),
        "export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1",
        'export NETRAIN_BATCH_DIR="$batch_dir"',
        'index=$(( SLURM_ARRAY_TASK_ID + ${NETRAIN_INDEX_OFFSET:-0} ))',
        'export NETRAIN_LOG="${NETRAIN_LOG:-$batch_dir/logs/${SLURM_JOB_NAME:-local}_'
        '${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID}.log}"',
        f"export NETRAIN_REQUEUE={1 if spec.slurm.get('requeue', True) else 0}",
        *_segment_case(spec),
        *env_lines,
        "# Run the task in its own process group so a signal reaches all of it: on SLURM's",
        "# time-limit warning (USR1), scancel (TERM) or Ctrl-C (INT) it checkpoints and stops;",
        "# after USR1 it requeues itself to resume (slurm.requeue).",
        "set -m",
        " ".join(cmd) + " &",
        "child=$!",
        "trap 'kill -USR1 -- -\"$child\" 2>/dev/null' USR1",
        "trap 'kill -TERM -- -\"$child\" 2>/dev/null' TERM",
        "trap 'kill -INT -- -\"$child\" 2>/dev/null' INT",
        "while :; do",
        '  wait "$child"; rc=$?',
        '  kill -0 "$child" 2>/dev/null || break',
        "done",
        "# Stopped by the time-limit warning with its checkpoints written: back in the queue.",
        'if [ "$rc" -eq 138 ] && [ "$NETRAIN_REQUEUE" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then',
        '  job="${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_JOB_ID:+_$SLURM_ARRAY_TASK_ID}"',
        '  echo "netrain: requeueing SLURM job $job to resume from its checkpoints"',
        '  scontrol requeue "$job"',
        "fi",
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


def one_writer(spec: ScriptSpec) -> bool:
    """A SQLite store whose SLURM tasks can leave all shipping to the batch's sync job."""
    return ship_plan.one_writer(spec.tracking_uri, spec.launcher, spec.env_kind)


def _one_writer_lines(spec: ScriptSpec) -> list[str]:
    if not one_writer(spec):
        return []
    # what the executor tells the tasks it submits, for an array submitted by hand
    facts = ship_plan.Facts("slurm", spec.tracking_uri, launcher=spec.launcher,
                            env_kind=spec.env_kind)
    told = ship_plan.decide(facts, environ={}).task_env()  # not this process's variables
    exports = " ".join(f"{k}={v}" for k, v in told.items())
    return ["# A SQLite store takes one writer (network filesystems do not keep its locks): on",
            "# SLURM no task opens it; the sync job (or netrain sync --follow) ships the journals.",
            f'if [ -n "${{SLURM_JOB_ID:-}}" ]; then export {exports}; fi']


def _sync_submit_lines(spec: ScriptSpec) -> list[str]:
    """Submitted by hand, the array gets its own sync job (one at a time per batch)."""
    job = sync_job(spec)
    if not one_writer(spec) or job is None:
        return []
    options, command = job
    argv = ["sbatch", "--parsable", '--dependency=afterany:"${job%%;*}",singleton',
            "--kill-on-invalid-dep=no", *(q(o) for o in options), q(f"--wrap={command}")]
    return [f'  sync=$(cd "$batch_dir" && {" ".join(argv)}) && '
            'echo "  sync job ${sync%%;*}: ships the journals once the array ends"']


def _submit_lines(spec: ScriptSpec) -> list[str]:
    """Outside SLURM (no array task id) the script submits itself and stops there. A
    model's array job is noted in records/runbatch-jobs.txt so `netrain show` asks SLURM about
    it; a retrain's is not (its state is not the model task's)."""
    key = f"{spec.cls}.{spec.architecture}"
    note = [f'  printf \'%s %s\\n\' {q(key)} "${{job%%;*}}" >> '
            '"$batch_dir/records/runbatch-jobs.txt"'] if not spec.job_suffix else []
    return [
        'if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then',
        '  command -v sbatch >/dev/null || { echo "netrain: sbatch is not on PATH: run this on '
        'a SLURM login node, or use netrain run" >&2; exit 2; }',
        '  script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"',
        '  job=$(cd "$batch_dir" && sbatch --parsable --chdir="$batch_dir" "$script") || exit 1',
        *note,
        f'  echo {q(key + spec.job_suffix)}": submitted array job ${{job%%;*}}"',
        *_sync_submit_lines(spec),
        "  exit 0",
        "fi",
    ]


def render_runbatch(batch_id: str, scripts: Sequence[tuple[str, str]]) -> str:
    """runbatch.sh: submit every model's array with plain sbatch, as in the seed.

    ``scripts`` holds (model key, script file name). Each script, run outside SLURM, submits
    itself and appends its job id to records/runbatch-jobs.txt, so `netrain show` can ask
    SLURM about these jobs too.
    """
    lines = [
        "#!/bin/bash",
        f"# Submit every model of netrain batch {batch_id} to SLURM, one array job per model.",
        "# 'netrain submit' does the same, splits arrays over MaxArraySize and records job ids.",
        "# Each model's script submits itself when run outside SLURM.",
        "set -eu",
        'cd "$(dirname "$0")"',
        "unset SLURM_ARRAY_TASK_ID",
    ]
    for _key, name in scripts:
        lines.append(f"bash {q('scripts/' + name)}")
    lines.append("")
    return "\n".join(lines)


def render_mlproject() -> str:
    """The batch's MLproject: one entry point, ``train``, running mlproject/entry.py."""
    params = []
    for key in TASK_PARAM_NAMES:
        if key in OPTIONAL_DEFAULTS:
            params.append(f"      {key}: {{type: string, default: \"{OPTIONAL_DEFAULTS[key]}\"}}")
        else:
            params.append(f"      {key}: string")
    flags = " ".join(f"--{k.replace('_', '-')} {{{k}}}" for k in TASK_PARAM_NAMES)
    return "\n".join([
        "# MLflow project of a netrain batch: each array task runs its entry point train",
        "name: netrain-batch",
        "conda_env: conda.yaml",
        "entry_points:",
        "  train:",
        "    parameters:",
        *params,
        f"    command: \"python mlproject/entry.py {flags}\"",
        "",
    ])
