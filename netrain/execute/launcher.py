"""The default launcher of an array task: runs the batch's MLproject entry point as a child
process that journals its tracking, ships the journal to MLflow while it runs, and exits
with the child's code.

Usage: python -m netrain.execute.launcher BATCH_DIR --experiment-id ID --env-manager local \
    -P k=v ...
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from netrain import env as names
from netrain.track.plan import LAUNCHER_SHIPS, for_task

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def entry_command(batch_dir: Path, entry_point: str, params: dict[str, str]) -> list[str]:
    """The entry point's command as the batch's MLproject declares it, with the params and
    their defaults filled in; a leading ``python`` becomes this interpreter."""
    import yaml

    project = yaml.safe_load((batch_dir / "MLproject").read_text(encoding="utf-8")) or {}
    entry = (project.get("entry_points") or {}).get(entry_point)
    if not isinstance(entry, dict) or "command" not in entry:
        raise ValueError(f"the batch's MLproject has no entry point {entry_point!r}")
    values: dict[str, str] = {}
    for name, decl in (entry.get("parameters") or {}).items():
        if isinstance(decl, dict) and "default" in decl:
            values[name] = str(decl["default"])
    values.update(params)
    missing = [n for n in (entry.get("parameters") or {}) if n not in values]
    if missing:
        raise ValueError(f"missing parameter(s) {', '.join(missing)}: pass -P NAME=VALUE")
    tokens = [tok.format(**values) for tok in shlex.split(str(entry["command"]))]
    if tokens and tokens[0] in ("python", "python3"):
        tokens[0] = sys.executable
    return tokens


def journal_for(batch_dir: Path, params: dict[str, str]) -> Path:
    """journal/<class>-<architecture>/<trainingrun>.jsonl, or journal/retrain/<key>.jsonl."""
    from netrain.track.journal import journal_path

    retrain_of = params.get("retrain_of", "none")
    if retrain_of not in ("", "none", "None"):
        from netrain.execute.records import retrain_key

        return journal_path(batch_dir, "", 0, retrain_key=retrain_key(retrain_of))
    slug = f"{params.get('class', '')}-{params.get('architecture', '')}"
    return journal_path(batch_dir, slug, int(params.get("trainingrun", "0")))


def project_tags(batch_dir: Path, entry_point: str, env_manager: str) -> dict[str, str]:
    """The tags `mlflow run` gives a project run (set on the task's run)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return {"mlflow.source.type": "PROJECT", "mlflow.source.name": str(batch_dir),
            "mlflow.project.entryPoint": entry_point, "mlflow.project.env": env_manager,
            "mlflow.project.backend": "local", "mlflow.user": user}


def _tracking_uri(batch_dir: Path) -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    with contextlib.suppress(Exception):
        from netrain.define.batch import Batch

        return str(Batch.load(batch_dir).manifest.tracking["uri"])
    return None


def ended_before_shipping(child: subprocess.Popen[Any], after: float) -> bool:
    """Wait up to ``after`` seconds (the plan's) for the child; whether it ended by then."""
    if after <= 0:
        return False
    try:
        child.wait(timeout=after)
    except subprocess.TimeoutExpired:
        return False
    return True


def _log(text: str) -> None:
    print(f"netrain: launcher: {text}", file=sys.stderr, flush=True)


class _ShipThread(threading.Thread):
    """Ships the journal while the child runs; never lets an error escape."""

    def __init__(self, journal: Path, batch_dir: Path, uri: str, tags: dict[str, str],
                 child: subprocess.Popen[Any]) -> None:
        super().__init__(name="netrain-shipper", daemon=True)
        self.journal, self.batch_dir, self.uri, self.tags = journal, batch_dir, uri, tags
        self.child = child
        self.shipper: Any = None
        self.summary = ""
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            from netrain.track.shipper import Busy, Shipper

            try:
                self.shipper = Shipper(self.journal, self.batch_dir, self.uri,
                                       root_tags=self.tags, wait_for_lock=True, log=_log)
            except Busy as exc:
                self.summary = str(exc)
                return
            finally:
                self.ready.set()
            with self.shipper as s:
                report = s.follow(lambda: self.child.poll() is None)
            self.summary = report.summary()
        except BaseException as exc:  # tracking must never change the task's outcome
            self.summary = f"shipping failed: {type(exc).__name__}: {exc}"
        finally:
            self.ready.set()

    def drain(self, timeout: float) -> None:
        """Give the shipper until ``timeout`` seconds from now to finish."""
        self.ready.wait(timeout)
        if self.shipper is not None:
            self.shipper.deadline = time.monotonic() + timeout
            self.shipper.wake.set()
        self.join(timeout + 5)
        if self.is_alive():
            self.summary = "drain timeout: the rest waits for netrain sync"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netrain.execute.launcher")
    ap.add_argument("batch_dir")
    ap.add_argument("-e", "--entry-point", default="train")
    ap.add_argument("--experiment-id", required=True)
    ap.add_argument("--env-manager", default="local", choices=["local", "conda", "virtualenv"])
    ap.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    params: dict[str, str] = {}
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"-P {item!r} is not KEY=VALUE")
        params[key] = value
    batch_dir = Path(a.batch_dir).resolve()
    try:
        cmd = entry_command(batch_dir, a.entry_point, params)
        journal = journal_for(batch_dir, params)
    except (OSError, ValueError, KeyError) as exc:
        print(f"netrain: error: cannot launch {batch_dir}: {exc}", file=sys.stderr)
        return 2
    tags = project_tags(batch_dir, a.entry_point, a.env_manager)
    env = dict(os.environ)
    env.update({names.JOURNAL: str(journal), names.SHIPPER: LAUNCHER_SHIPS,
                "MLFLOW_EXPERIMENT_ID": str(a.experiment_id),
                names.RUN_TAGS: json.dumps(tags)})
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    received: list[int] = []
    started: list[subprocess.Popen[Any]] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if started:
            with contextlib.suppress(OSError):
                os.kill(started[0].pid, signum)

    # Handlers first: a signal that comes while the child starts is forwarded right after.
    # The child stays in our process group, so a signal to the group (the sbatch script's
    # trap, SLURM, Ctrl-C) or a SIGKILL of the group reaches it directly; a second copy
    # from us is ignored by a task that is already stopping.
    for sig in FORWARDED:
        signal.signal(sig, forward)
    child = subprocess.Popen(cmd, cwd=batch_dir, env=env)
    started.append(child)
    for signum in received:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signum)
    uri = _tracking_uri(batch_dir)
    plan = for_task(uri or "", launcher=True)
    shipper: _ShipThread | None = None
    if not plan.where:
        _log(plan.note)
    elif ended_before_shipping(child, plan.after):
        _log(f"the task ended within {plan.after:.0f} s: its journal is shipped after it "
             "(the batch's sync job, or netrain run)")
    else:
        shipper = _ShipThread(journal, batch_dir, str(uri), tags, child)
        shipper.start()
    rc = child.wait()
    if shipper is not None:
        try:
            shipper.drain(plan.drain)
            if shipper.summary:
                _log(f"{journal.relative_to(batch_dir)}: {shipper.summary}")
        except BaseException as exc:  # never change the exit code
            _log(f"shipping stopped: {type(exc).__name__}")
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    from netrain.exits import run_main

    run_main(main, "netrain: launcher")
