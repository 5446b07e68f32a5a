"""`netrain check`: netrain's own probe run where the tasks will run, judged against this side
and the scripts' SLURM options, as one table whose failing lines name their fix.

The middle is pure (``judge`` turns facts into lines, ``render`` lines into text); the edges
gather the facts: ``here_facts`` on this side, ``run_probe`` with the tasks' Python (here, or
as one short SLURM job), ``cluster_facts`` from ``sbatch --test-only`` and ``scontrol``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.define.config import Config

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "-"
MARKER = "NETRAIN-CHECK-RESULT "
#: Filesystems on which SQLite's locking is not to be trusted with several writers.
NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "beegfs", "ceph", "fuse.sshfs",
              "glusterfs", "panfs", "wekafs")
#: The check job's time limit when netrain.yaml's is longer (or unset).
JOB_MINUTES = 10


@dataclass(frozen=True)
class Line:
    """One row of the table: what was checked, its verdict, both sides, and the fix."""

    name: str
    status: str
    here: str
    node: str
    fix: str = ""


@dataclass
class Facts:
    """Everything ``judge`` needs: plain data gathered by the edges."""

    executor: str
    gpu: bool
    env_kind: str
    env_value: str
    env_key: str  # "cpu" | "gpu": which key of environments the tasks use
    trainings_dir: str
    tracking_uri: str
    here: dict[str, Any]
    #: The probe's answer, or None when it gave none (``run_error`` says why).
    node: dict[str, Any] | None = None
    run_error: str = ""
    #: Whether the node's file appeared here after the job (None: not tested).
    node_file_seen: bool | None = None
    #: SLURM only: {"max_array_size", "array", "base", "requeue", "signal", "array_error",
    #: "time", "signal_value", "requeue_on", "gres"}.
    cluster: dict[str, Any] = field(default_factory=dict)
    models: Sequence[str] = ()
    models_note: str = ""


# ------------------------------------------------------------------------------- pure part

def parse_time_limit(text: str | None) -> int | None:
    """SLURM's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> seconds; None if unset,
    unlimited or unreadable."""
    if not text or str(text).strip().lower() in ("infinite", "unlimited"):
        return None
    t = str(text).strip()
    days = 0
    if "-" in t:
        d, t = t.split("-", 1)
        if not d.isdigit():
            return None
        days = int(d)
        parts = t.split(":")
        if not all(p.isdigit() for p in parts) or len(parts) > 3:
            return None
        h, m, s = ([*map(int, parts), 0, 0])[:3]
        return days * 86400 + h * 3600 + m * 60 + s
    parts = t.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    nums = list(map(int, parts))
    if len(nums) == 1:
        return nums[0] * 60
    if len(nums) == 2:
        return nums[0] * 60 + nums[1]
    return nums[0] * 3600 + nums[1] * 60 + nums[2]


def signal_lead(signal: str) -> int:
    """Seconds before the time limit that ``--signal=[B:]SIG[@TIME]`` fires (SLURM: 60)."""
    m = re.search(r"@(\d+)\s*$", signal)
    return int(m.group(1)) if m else 60


def _py(version: str) -> str:
    return ".".join(version.split(".")[:2])


def judge(f: Facts) -> list[Line]:
    """The table's lines, from the facts: pure, so every verdict and fix is tested on data."""
    node = f.node
    where = node.get("host", "the node") if node else "the node"
    env_key = f"environments.{f.env_key}"
    lines: list[Line] = []
    if f.executor == "slurm":
        lines.append(_job_line(f))
    lines.append(_python_line(f, where, env_key))
    lines.append(_netrain_line(f, where, env_key))
    lines.append(_keras_line(f, where, env_key))
    if f.gpu:
        lines.append(_gpu_line(f, where))
    lines.append(_trainings_line(f, where))
    lines.append(_tracking_line(f, where))
    if f.models:
        lines.append(_models_line(f))
    if f.executor == "slurm":
        lines.extend(_cluster_lines(f))
    return lines


def _no_answer(f: Facts, name: str, here: str) -> Line:
    return Line(name, SKIP, here, "not checked: the probe gave no answer")


def _job_line(f: Facts) -> Line:
    c = f.cluster
    opts = ", ".join(f"{k} {c[k]}" for k in ("partition", "account", "qos", "gres") if c.get(k))
    here = f"srun, {opts}" if opts else "srun, the cluster's defaults"
    if f.node:
        job = f.node.get("slurm_job_id") or "?"
        part = f.node.get("partition")
        return Line("job", OK, here, f"job {job} ran on {f.node.get('host')}"
                    + (f" (partition {part})" if part else ""))
    err = f.run_error or "no answer"
    if "no answer within" in err:
        return Line("job", FAIL, here, err,
                    "the check job did not run in time: run netrain check again with a "
                    "longer --timeout (or when the queue is shorter); squeue -u $USER shows why")
    if "Unable to allocate" in err or "invalid" in err.lower() or "srun:" in err:
        return Line("job", FAIL, here, err,
                    "SLURM refused the check job: fix slurm.partition / account / qos / gres / "
                    "extra in netrain.yaml (sinfo lists partitions; sacctmgr show assoc "
                    "user=$USER your accounts and qos)")
    return Line("job", OK, here, "ran (no answer from the probe: see python)")


def _python_line(f: Facts, where: str, env_key: str) -> Line:
    here = f"{f.here['python']} {f.here['executable']}"
    if not f.node:
        if f.executor == "slurm" and not _job_ran(f):
            return _no_answer(f, "python", here)
        return Line("python", FAIL, here, f.run_error or "no answer",
                    f"the tasks' Python {f.env_value} did not run on {where}: install it there, "
                    f"or point {env_key} in netrain.yaml to a Python the nodes have")
    py = f.node["python"]
    node = f"{py['version']} {py['executable']}"
    if _py(py["version"]) != _py(f.here["python"]):
        return Line("python", WARN, here, node,
                    f"Python {_py(py['version'])} on {where}, {_py(f.here['python'])} here: "
                    "fine while netrain and your packages are installed for each")
    return Line("python", OK, here, node)


def _job_ran(f: Facts) -> bool:
    """Whether the SLURM job ran at all (a refused or pending job leaves python unchecked)."""
    err = f.run_error
    return not ("no answer within" in err or "Unable to allocate" in err
                or "srun: error: invalid" in err.lower() or "command not found" in err)


def _netrain_line(f: Facts, where: str, env_key: str) -> Line:
    want = f.here["netrain"]
    if not f.node:
        return _no_answer(f, "netrain", want)
    n = f.node.get("netrain") or {}
    python = f.node["python"]["executable"]
    if n.get("error"):
        return Line("netrain", FAIL, want, n["error"],
                    f"install netrain {want} for {python} on {where} ({python} -m pip install "
                    f"netrain=={want}), or point {env_key} in netrain.yaml to a Python that "
                    "has it")
    if n.get("version") != want:
        return Line("netrain", FAIL, want, f"{n.get('version')} {n.get('path', '')}".strip(),
                    f"netrain {n.get('version')} on {where}, {want} here: batches are written "
                    "by this side and run by that one: install the same version on both")
    return Line("netrain", OK, want, f"{n['version']} {n.get('path', '')}".strip())


def _keras_line(f: Facts, where: str, env_key: str) -> Line:
    here = f.here.get("keras") or "-"
    if not f.node:
        return _no_answer(f, "keras", here)
    k = f.node.get("keras") or {}
    python = f.node["python"]["executable"]
    if k.get("error"):
        what = f"keras {k['version']} on {k.get('backend')}: " if k.get("version") else ""
        return Line("keras", FAIL, here, what + k["error"],
                    f"install keras 3 and its backend (tensorflow, or jax) for {python} on "
                    f"{where}, or point {env_key} in netrain.yaml to a Python that has them")
    return Line("keras", OK, here,
                f"{k.get('version')} on {k.get('backend')} {k.get('backend_version')}")


def _gpu_line(f: Facts, where: str) -> Line:
    gres = f.cluster.get("gres") if f.executor == "slurm" else None
    here = f"--gres={gres}" if gres else "--gpu"
    if not f.node:
        return _no_answer(f, "gpu", here)
    if f.node.get("keras", {}).get("error"):
        return Line("gpu", SKIP, here, "not checked: no keras on the node")
    g = f.node.get("keras", {}).get("gpu") or {}
    devices = g.get("devices") or []
    if devices:
        return Line("gpu", OK, here, f"{len(devices)} seen by {f.node['keras'].get('backend')}: "
                    + ", ".join(devices))
    smi = g.get("nvidia_smi") or []
    seen = (f"nvidia-smi lists {len(smi)}, {f.node['keras'].get('backend')} sees none"
            if smi else "no GPU")
    if g.get("error"):
        seen += f" ({g['error']})"
    backend = f.node["keras"].get("backend")
    if smi:
        fix = (f"install a GPU build of {backend} (e.g. tensorflow[and-cuda]) in "
               "environments.gpu")
    elif f.executor == "slurm":
        fix = "request a GPU: slurm.gres (gpu:1 by default) on a GPU partition (slurm.partition)"
    else:
        fix = "run on a machine with a GPU (or leave out --gpu)"
    return Line("gpu", FAIL, here, seen, f"no GPU for training on {where}: {fix}")


def _trainings_line(f: Facts, where: str) -> Line:
    h = f.here.get("trainings", {})
    path = f.trainings_dir
    here = path + (" (writable)" if h.get("writable") else
                   f" (not writable here: {h.get('error')})" if h.get("error") else "")
    if not f.node:
        return _no_answer(f, "trainings_dir", here)
    t = f.node.get("trainings") or {}
    if t.get("error"):
        return Line("trainings_dir", FAIL, here, t["error"], "see the error")
    if not t.get("exists"):
        return Line("trainings_dir", FAIL, here, "does not exist on the node",
                    f"mount {path} on the compute nodes at the same path, or point "
                    "trainings_dir in netrain.yaml to a filesystem both sides share")
    if t.get("token") is False or f.node_file_seen is False:
        return Line("trainings_dir", FAIL, here, "another directory than here (same path)",
                    f"{path} on {where} is not the directory this side has (a local disk?): "
                    "point trainings_dir to a filesystem both sides share")
    if t.get("write_error"):
        return Line("trainings_dir", FAIL, here, f"not writable: {t['write_error']}",
                    f"the tasks write their weights, logs and journals into {path}: make it "
                    f"writable for your user on {where} (chmod/chown, or ask who mounts it), "
                    "or point trainings_dir in netrain.yaml elsewhere")
    same = "the same directory, " if t.get("token") else ""
    fs = f" ({t['fs']})" if t.get("fs") else ""
    return Line("trainings_dir", OK, here, f"{same}writable{fs}")


def _tracking_line(f: Facts, where: str) -> Line:
    uri = f.tracking_uri
    hs = f.here.get("tracking") or {}
    if not f.node:
        return _no_answer(f, "tracking", uri)
    t = f.node.get("tracking") or {}
    if t.get("kind") == "sqlite":
        here = f"file store {uri[len('sqlite:///'):]}"
        trainings = f.node.get("trainings") or {}
        if not trainings.get("exists") or trainings.get("write_error"):
            return Line("tracking", FAIL, here, "journals not writable",
                        "tasks write their journals into the batch: make trainings_dir "
                        "writable on the nodes (see trainings_dir)")
        if not t.get("exists") or t.get("write_error"):
            why = t.get("write_error") or "its directory does not exist there"
            return Line("tracking", FAIL, here, f"database not writable: {why}",
                        f"the batch's sync job runs on a node and writes {t.get('dir')}: put "
                        "the database on a filesystem the nodes mount (tracking_uri), or use "
                        "netrain server")
        fs = t.get("fs") or ""
        note = (f"; on {fs}: one writer only (the sync job or netrain sync --follow)"
                if fs in NETWORK_FS else "")
        return Line("tracking", OK, here, f"journals and database writable{note}")
    if t.get("kind") == "http":
        here_txt = _http_text(hs) if hs else uri
        node_txt = _http_text(t)
        status = t.get("status")
        if status in (200, 404):
            return Line("tracking", OK, f"{uri}: {here_txt}", node_txt)
        if status == 401:
            fix = ("the server refused the name or password in MLFLOW_TRACKING_USERNAME / "
                   "MLFLOW_TRACKING_PASSWORD: fix them (the tasks get them from sbatch)"
                   if t.get("credentials") != "none" else
                   "the server wants a login: export MLFLOW_TRACKING_USERNAME and "
                   "MLFLOW_TRACKING_PASSWORD before netrain check / generate --run / submit "
                   "(sbatch passes them on to the tasks; never put them in netrain.yaml)")
            return Line("tracking", FAIL, f"{uri}: {here_txt}", node_txt, fix)
        if status == 403:
            return Line("tracking", FAIL, f"{uri}: {here_txt}", node_txt,
                        "the server knows this user but does not let it write: ask its admin "
                        "for permission")
        if status is not None:
            return Line("tracking", FAIL, f"{uri}: {here_txt}", node_txt,
                        f"the tracking server answered HTTP {status}: see its log")
        if hs and hs.get("status") is None:
            return Line("tracking", FAIL, f"{uri}: {here_txt}", node_txt,
                        f"no tracking server answers at {uri}, from here either: start it "
                        "(netrain server --host ADDRESS --auth) and check tracking_uri")
        return Line("tracking", FAIL, f"{uri}: {here_txt}", node_txt,
                    f"{where} cannot reach {uri}: run netrain server on a host the nodes reach, "
                    "with --host set to an address they can use (and --auth), and put that "
                    "address in tracking_uri")
    if t.get("skipped"):
        return Line("tracking", SKIP, uri, "not checked")
    if t.get("error"):
        return Line("tracking", FAIL, uri, f"{t.get('address')}: {t['error']}",
                    f"{where} cannot open a connection to the database: check tracking_uri "
                    "and that the database accepts connections from the nodes")
    return Line("tracking", OK, uri, f"{t.get('address')} reachable")


def _http_text(t: dict[str, Any]) -> str:
    if t.get("status") is not None:
        word = {200: "answers", 404: "answers", 401: "401 unauthorized",
                403: "403 forbidden"}.get(t["status"], f"HTTP {t['status']}")
        login = {"basic": ", with MLFLOW_TRACKING_USERNAME", "token": ", with a token",
                 "none": ", no credentials"}.get(t.get("credentials", ""), "")
        return word + login
    return f"unreachable ({t.get('error')})"


def _models_line(f: Facts) -> Line:
    here = ", ".join(f.models)
    if not f.node:
        return _no_answer(f, "models", here)
    m = f.node.get("models")
    if m is None:
        return Line("models", SKIP, here, f.models_note or "not checked: no netrain there")
    if m.get("error"):
        return Line("models", FAIL, here, "the configuration failed",
                    m["error"].replace(" (fix it, or run generate with --no-check)", ""))
    warn = "; ".join(m.get("warnings") or [])
    return Line("models", WARN if warn else OK, here,
                "configuration function, model and one batch of data: ok", warn)


def _cluster_lines(f: Facts) -> list[Line]:
    c = f.cluster
    out: list[Line] = []
    base = c.get("base", "")
    if base:
        out.append(Line("sbatch options", FAIL, "sbatch --test-only", base,
                        "the scripts' #SBATCH options are refused: fix slurm.partition / "
                        "account / qos / mem / cpus_per_task / gres / extra in netrain.yaml"))
        return out
    out.append(Line("sbatch options", OK, "sbatch --test-only", "accepted"))
    if c.get("requeue_on"):
        scontrol = f.node.get("scontrol") if f.node else None
        if c.get("requeue"):
            out.append(Line("requeue", FAIL, "--requeue", c["requeue"],
                            "the cluster refuses --requeue: set slurm.requeue: false (tasks "
                            "then stop at the time limit with their checkpoints; resubmit "
                            "--failed resumes them)"))
        elif f.node and not scontrol:
            out.append(Line("requeue", FAIL, "--requeue accepted", "no scontrol on the node",
                            "a task stopped by the time-limit warning requeues itself with "
                            "scontrol, which the node lacks: put SLURM's commands on the "
                            "nodes' PATH, or set slurm.requeue: false"))
        else:
            out.append(Line("requeue", OK, "--requeue accepted",
                            f"scontrol {scontrol}" if scontrol else "-"))
    else:
        out.append(Line("requeue", OK, "off (slurm.requeue: false)", "-"))
    sig = c.get("signal_value")
    if sig:
        limit = parse_time_limit(c.get("time"))
        lead = signal_lead(sig)
        if c.get("signal"):
            out.append(Line("signal", FAIL, f"--signal={sig}", c["signal"],
                            "fix slurm.signal in netrain.yaml (netrain's default: "
                            "B:USR1@120)"))
        elif limit is not None and lead >= limit:
            out.append(Line("signal", FAIL, f"--signal={sig}", f"time limit {c.get('time')}",
                            f"the warning comes {lead} s before a time limit of {limit} s, so "
                            "at the start: raise slurm.time or lower the @seconds of "
                            "slurm.signal"))
        else:
            out.append(Line("signal", OK, f"--signal={sig}", "accepted"))
    else:
        out.append(Line("signal", WARN, "no slurm.signal", "-",
                        "without a warning before the time limit, a task that hits it loses "
                        "the epochs since its last checkpoint: set slurm.signal: B:USR1@120"))
    limit = c.get("max_array_size")
    n = int(c.get("array") or 1)
    if limit:
        jobs = (n + limit - 1) // limit  # the limit bounds the index: 0..n-1
        here = f"--array {n}" + (f"%{c['max_running']}" if c.get("max_running") else "")
        node = (f"MaxArraySize {limit}: one job per model" if jobs == 1 else
                f"MaxArraySize {limit}: {jobs} jobs per model (netrain splits the array)")
        if c.get("array_error"):
            out.append(Line("array", FAIL, here, c["array_error"],
                            "lower --array or slurm.max_running, or ask the admins about the "
                            "cluster's limits (MaxArraySize, MaxSubmitJobs)"))
        else:
            out.append(Line("array", OK, here, node))
    return out


def failed(lines: Sequence[Line]) -> list[Line]:
    return [x for x in lines if x.status == FAIL]


def render(lines: Sequence[Line], title: str, here_label: str, node_label: str) -> str:
    """The table: one row per check, the fix indented under each failing or warning row."""
    head = ("CHECK", "RESULT", f"HERE ({here_label})", f"NODE ({node_label})")
    rows = [(x.name, x.status, x.here, x.node) for x in lines]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

    def fmt(r: tuple[str, str, str, str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]

    out = [title, fmt(head)]
    for x, r in zip(lines, rows, strict=True):
        out.append(fmt(r).rstrip())
        if x.fix and x.status in (FAIL, WARN):
            out.append(f"  {'fix' if x.status == FAIL else 'note'}: {x.fix}")
    bad = failed(lines)
    out.append(f"{len(bad)} check(s) failed: fix them before submitting a large array."
               if bad else "every check passed.")
    return "\n".join(out)


# ----------------------------------------------------------------------------------- edges

def here_facts(trainings_dir: Path, token_name: str, token: str, tracking_uri: str
               ) -> dict[str, Any]:
    """This side: Python, netrain, keras (from its metadata: no import), the trainings
    directory (created if missing, as generate would), a token file the node must see, and
    the tracking server as seen from here."""
    from importlib import metadata

    from netrain import __version__
    from netrain.execute import nodeprobe

    out: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(),
                           "executable": sys.executable, "netrain": __version__}
    try:
        out["keras"] = metadata.version("keras")
    except metadata.PackageNotFoundError:
        out["keras"] = "-"
    t: dict[str, Any] = {}
    try:
        trainings_dir.mkdir(parents=True, exist_ok=True)
        (trainings_dir / token_name).write_text(token + "\n")
        t["writable"] = True
    except OSError as exc:
        t["error"] = exc.strerror or str(exc)
    out["trainings"] = t
    if tracking_uri.startswith(("http://", "https://")):
        out["tracking"] = nodeprobe.http_probe(tracking_uri)
    return out


def probe_command(env_kind: str, env_value: str, request: dict[str, Any]) -> list[str]:
    """``bash -c`` that makes the tasks' Python available as their scripts do, then runs the
    probe's source with it (nothing of netrain need be importable there)."""
    from netrain.define.scripts import environment_lines
    from netrain.execute import nodeprobe

    lines, python = environment_lines(env_kind, env_value)
    source = Path(nodeprobe.__file__).read_text(encoding="utf-8")
    script = "; ".join([*lines, f"exec {python} -c {shlex.quote(source)} "
                                f"{shlex.quote(json.dumps(request))}"])
    return ["bash", "-c", script]


def parse_answer(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                return dict(json.loads(line[len(MARKER):]))
            except ValueError:
                return None
    return None


def _last_words(stderr: str, stdout: str) -> str:
    lines = [x.strip() for x in (stderr or stdout).splitlines() if x.strip()]
    said = [x for x in lines if "error" in x.lower()] or lines
    return said[-1] if said else ""


def run_here(command: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    try:
        p = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=_probe_env())
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout:.0f} s"
    answer = parse_answer(p.stdout)
    return answer, "" if answer else (_last_words(p.stderr, p.stdout)
                                      or f"exit code {p.returncode}")


def run_on_node(options: list[str], command: list[str], timeout: float
                ) -> tuple[dict[str, Any] | None, str]:
    from netrain.execute import slurm

    name = f"netrain-check-{secrets.token_hex(4)}"
    r = slurm.run_step(options, command, name, timeout, _probe_env())
    answer = parse_answer(r.stdout)
    if answer:
        return answer, ""
    return None, _last_words(r.stderr, r.stdout) or f"srun exited {r.returncode}"


def _probe_env() -> dict[str, str]:
    # srun inside an allocation would start a step of it instead of a job of its own
    drop = ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_STEPID",
            "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
               MLFLOW_DISABLE_TELEMETRY="true")
    return env


def job_options(cfg: Config, gpu: bool) -> list[str]:
    """srun options for the check job: the batch settings' partition, account, qos, memory,
    CPUs, extra lines and (--gpu) GPU request, with a short time limit."""
    s = cfg.slurm
    opts = [f"--{o}={v}" for o, v in (("partition", s.partition), ("account", s.account),
                                      ("qos", s.qos), ("mem", s.mem),
                                      ("cpus-per-task", s.cpus_per_task)) if v is not None]
    limit = parse_time_limit(s.time)
    minutes = JOB_MINUTES if limit is None else max(1, min(JOB_MINUTES, limit // 60))
    opts.append(f"--time={minutes}")
    if gpu:
        opts.append(f"--gres={s.gres or 'gpu:1'}")
    opts.extend(x if x.startswith("-") else f"--{x}" for x in s.extra)
    return opts


def cluster_facts(cfg: Config, gpu: bool, array: int, runner: Any = None) -> dict[str, Any]:
    """What the controller says of the scripts' own #SBATCH lines (``sbatch --test-only``,
    nothing submitted): the options alone, then with --requeue, --signal, the array."""
    import tempfile

    from netrain.define import scripts as render
    from netrain.execute import slurm

    run = runner or slurm.run_command
    s = cfg.slurm
    limit = slurm.max_array_size(run)
    facts: dict[str, Any] = {
        "max_array_size": limit, "array": array, "max_running": s.max_running,
        "time": s.time, "signal_value": s.signal, "requeue_on": s.requeue,
        "partition": s.partition, "account": s.account, "qos": s.qos,
        "gres": (s.gres or "gpu:1") if gpu else None,
    }
    slurm_map = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(s).items()}

    def spec(arr: str, **over: Any) -> render.ScriptSpec:
        return render.ScriptSpec(
            batch_id="check", batch_dir=str(cfg.trainings_dir), cls="netrain", architecture="check",
            array=arr, segments=(), tracking_uri=cfg.tracking_uri, experiment_id="0",
            env_kind="python", env_value=sys.executable, gpu=gpu,
            slurm={**slurm_map, **over})

    with tempfile.TemporaryDirectory(prefix="netrain-check-") as d:
        def ask(sp: render.ScriptSpec) -> str:
            path = Path(d) / "check.sh"
            path.write_text("\n".join(["#!/bin/bash", *render.sbatch_directives(sp),
                                       "true", ""]))
            return slurm.test_only(str(path), run)

        facts["base"] = ask(spec("0", signal=None, requeue=False))
        if facts["base"]:
            return facts
        if s.requeue:
            facts["requeue"] = ask(spec("0", signal=None))
        if s.signal:
            facts["signal"] = ask(spec("0", requeue=False))
        top = min(array, limit) - 1
        arr = f"0-{top}" + (f"%{s.max_running}" if s.max_running else "")
        facts["array_error"] = ask(spec(arr))
    return facts


@dataclass
class Outcome:
    lines: list[Line]
    text: str

    @property
    def ok(self) -> bool:
        return not failed(self.lines)


def check(cfg: Config, executor: str, *, gpu: bool = False, models: Sequence[Any] = (),
          array: int = 1, timeout: float = 600,
          say: Callable[[str], None] = lambda _: None) -> Outcome:
    """Run the probe where the tasks run (this machine, or one SLURM job), gather this side's
    and the cluster's facts, and judge them."""
    env = cfg.environment(gpu)
    token_name = f".netrain-check-{secrets.token_hex(6)}"
    token = secrets.token_hex(8)
    td = cfg.trainings_dir
    here = here_facts(td, token_name, token, cfg.tracking_uri)
    request: dict[str, Any] = {"trainings_dir": str(td), "tracking_uri": cfg.tracking_uri,
                               "gpu": gpu,
                               "token_name": token_name if here["trainings"].get("writable")
                               else None, "token": token}
    code_parent = td / (token_name + ".d")
    try:
        models_note = ""
        if models and request["token_name"]:
            request["models"] = _models_request(cfg, models, code_parent, array)
        elif models:
            models_note = "not checked: the trainings directory is not writable here"
        # (a conda .yaml environment is built by MLflow on the node: the python on PATH
        # there stands in for it)
        command = probe_command(env.kind, env.value, request)
        facts = Facts(executor=executor, gpu=gpu, env_kind=env.kind, env_value=env.value,
                      env_key="gpu" if gpu else "cpu", trainings_dir=str(td),
                      tracking_uri=cfg.tracking_uri, here=here,
                      models=[f"{m.cls}.{m.architecture}" for m in models],
                      models_note=models_note)
        if executor == "slurm":
            from netrain.execute import slurm

            if not slurm.available():
                from netrain.errors import SchedulerError

                raise SchedulerError("SLURM's sbatch is not on PATH: run netrain check on a "
                                     "cluster login node, or use --executor local")
            facts.cluster = cluster_facts(cfg, gpu, array)
            say(f"running the probe as one SLURM job (up to {timeout:.0f} s)")
            facts.node, facts.run_error = run_on_node(job_options(cfg, gpu), command, timeout)
        else:
            say("running the probe with the tasks' Python on this machine")
            facts.node, facts.run_error = run_here(command, timeout)
        if request["token_name"] and facts.node and not (
                (facts.node.get("trainings") or {}).get("write_error")):
            facts.node_file_seen = (td / (token_name + ".node")).is_file()
    finally:
        for p in (td / token_name, td / (token_name + ".node")):
            with contextlib.suppress(OSError):
                p.unlink()
        if code_parent.exists():
            import shutil

            shutil.rmtree(code_parent, ignore_errors=True)
    lines = judge(facts)
    node_label = (facts.node or {}).get("host") or ("a node" if executor == "slurm" else "-")
    where = (f"one SLURM job, the tasks' Python {env.value}" if executor == "slurm"
             else f"this machine, the tasks' Python {env.value}")
    title = f"netrain check ({where}):"
    return Outcome(lines, render(lines, title, here["host"], node_label))


def _models_request(cfg: Config, models: Sequence[Any], parent: Path, array: int
                    ) -> dict[str, Any]:
    """A snapshot of the code (as generate takes one) for the node to import, under the
    trainings directory the tasks will read theirs from."""
    from netrain.define.snapshot import snapshot_code
    from netrain.errors import ConfigError

    try:
        main_rel = str(cfg.main_script.relative_to(cfg.code_dir))
    except ValueError:
        raise ConfigError(f"main_script {cfg.main_script} is outside code_dir {cfg.code_dir}: "
                          "move it or set code_dir to a folder holding it") from None
    if not cfg.main_script.is_file():
        raise ConfigError(f"main_script {cfg.main_script} does not exist: fix main_script in "
                          f"{cfg.path or 'netrain.yaml'} (or leave out --models)")
    parent.mkdir(parents=True)
    snapshot_code(cfg.code_dir, parent / "code", cfg.code_exclude,
                  skip_paths=(cfg.trainings_dir,))
    return {"code_dir": str(parent / "code"), "main_script": main_rel,
            "main_script_label": main_rel, "batch_dir": str(parent), "batch": "check",
            "models": [{"cls": m.cls, "architecture": m.architecture, "nnets": m.nnets,
                        "nb_epoch": 1, "epoch_samples": 32, "intelligent": False}
                       for m in models], "array": array}




# ------------------------------------------- the hint when a batch's first tasks all fail

#: How many of a batch's first tasks must have failed alike before netrain suggests a check.
FIRST_TASKS = 3
#: SLURM words for a task that ended badly, and for one that ended well.
_ENDED_BADLY = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def failure_signature(log: Path) -> str:
    """The last telling line of a task's log, digits masked so that the same failure of two
    tasks reads the same; "" if there is nothing to read."""
    return re.sub(r"\d+", "N", failure_line(log))


def failure_line(log: Path) -> str:
    """The last telling line of a task's log: an error if it names one, else its last."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errors = [x for x in lines if re.search(r"error|exception|not found|no such|denied|"
                                            r"cannot|failed", x, re.I)]
    return (errors or lines or [""])[-1][:300]


def killed_by(returncode: int) -> str:
    """The signal that ended a task, by its exit code (-9 from a process killed itself,
    137 = 128 + 9 as netrain's launcher and shells report a child's), e.g. "SIGKILL"; ""
    when the task exited by itself."""
    import signal

    n = -returncode if returncode < 0 else returncode - 128 if 128 < returncode <= 192 else 0
    if n <= 0:
        return ""
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def first_failures_hint(ended: Sequence[tuple[int, Path]], total: int) -> str:
    """``ended``: (exit code, log) of the first tasks to end, in the order they ended. When
    the first min(3, total) all failed with the same last error line, the hint to print.
    Tasks killed by a signal say nothing of their environment: no hint."""
    k = min(FIRST_TASKS, total)
    first = list(ended)[:k]
    if (k == 0 or len(first) < k or any(rc == 0 for rc, _ in first)
            or any(killed_by(rc) for rc, _ in first)):
        return ""
    sigs = {failure_signature(log) for _, log in first}
    if len(sigs) != 1 or "" in sigs:
        return ""
    line = failure_line(first[0][1])
    return (f"the first {k} task(s) all failed the same way ({line}; log: {first[0][1]}): run "
            "netrain check to test the tasks' environment where they run")


def watch_first_tasks(batch_dir: Path, job_ids: Sequence[str], total: int, seconds: float,
                      runner: Any = None, every: float = 2.0) -> str:
    """After a SLURM submit: follow the first tasks (sacct and squeue every 2 s) and return
    first_failures_hint's verdict; "" as soon as a task ends well, 20 s after the first task
    runs, or after ``seconds`` (a failing environment fails a task within seconds)."""
    import time

    from netrain.execute import slurm

    deadline = time.monotonic() + seconds
    running_since: float | None = None
    order: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        states, _ = slurm.job_states(list(job_ids), runner=runner)
        for job in sorted(states):
            for t, state in sorted(states[job].items()):
                if state == "COMPLETED":
                    return ""
                if state == "RUNNING" and running_since is None:
                    running_since = time.monotonic()
                    deadline = min(deadline, running_since + 20)
                # t < 0: sacct's row for the whole array before its tasks have rows
                if state in _ENDED_BADLY and t >= 0 and (job, t) not in order:
                    order.append((job, t))
        if len(order) >= min(FIRST_TASKS, total):
            return first_failures_hint([(1, _slurm_log(batch_dir, j, t)) for j, t in order],
                                       total)
        time.sleep(every)
    return ""


def _slurm_log(batch_dir: Path, job: str, task: int) -> Path:
    found = sorted((batch_dir / "logs").glob(f"*_{job}_{task}.log"))
    return found[0] if found else batch_dir / "logs" / f"{job}_{task}.log"
