"""Run one task of a batch as an MLflow project run, like ``mlflow run``, but through
MLflow's Projects API (what the ``mlflow run`` command calls) instead of the ``mlflow`` CLI,
whose start-up imports MLflow's server and assistant (~1-3 s more per task, measured in
BENCHMARKS.md).

Usage: python -m netrain.launch BATCH_DIR --experiment-id ID --env-manager local -P k=v ...
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netrain.launch")
    ap.add_argument("batch_dir")
    ap.add_argument("-e", "--entry-point", default="train")
    ap.add_argument("--experiment-id", required=True)
    ap.add_argument("--env-manager", default="local", choices=["local", "conda", "virtualenv"])
    ap.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    params = {}
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"-P {item!r} is not KEY=VALUE")
        params[key] = value
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    import mlflow.projects
    from mlflow.exceptions import ExecutionException

    try:
        mlflow.projects.run(uri=a.batch_dir, entry_point=a.entry_point, parameters=params,
                            experiment_id=a.experiment_id, env_manager=a.env_manager,
                            synchronous=True)
    except ExecutionException as exc:
        print(f"netrain: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
