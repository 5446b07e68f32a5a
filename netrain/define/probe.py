"""Probing the user's configuration from the submitting side: run the child-side probe
(netrain.train.probe) in a fresh process with the task's Python and read back its verdict."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from netrain.errors import ContractError


def run_probe(request: dict[str, Any], python: str, timeout: float = 900) -> dict[str, Any]:
    """Run netrain.probe in a child process with the task's Python; return its verdict."""
    with tempfile.TemporaryDirectory(prefix="netrain-probe-") as d:
        req = Path(d) / "request.json"
        res = Path(d) / "result.json"
        req.write_text(json.dumps(request))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
                   MLFLOW_DISABLE_TELEMETRY="true")
        try:
            proc = subprocess.run([python, "-m", "netrain.train.probe", str(req), str(res)],
                                  capture_output=True, text=True, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ContractError(f"checking the configuration took over {timeout:.0f} s: "
                                "use --no-check to skip it") from None
        except OSError as exc:
            raise ContractError(f"cannot run {python} to check the configuration: "
                                f"{exc.strerror}") from None
        if res.is_file():
            return dict(json.loads(res.read_text()))
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        last = tail[-1] if tail else f"exit code {proc.returncode}"
        raise ContractError(f"checking the configuration crashed ({last}): use --no-check to "
                            "skip it")
