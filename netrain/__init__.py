"""netrain: train many Keras networks as SLURM array jobs (or locally), every network an MLflow run.

Importing this package is cheap: TensorFlow, Keras and MLflow are imported only where a
network is trained or a run is recorded.

The package is laid out by stage, so the tree reads as a batch flows through it:

- track/    the journal, the shipper and the doors to MLflow (knows runs, not batches)
- define/   what a batch is: spec, netrain.yaml, the contract, the manifest, its builder
- execute/  where tasks run: local or SLURM, the launcher, records, status, healing
- train/    inside a task process: the task runner and the two trainers (Keras lives here)
- results/  what happened: networks, show's table, report, best, describe
- cli/      one module per command

stages, bottom to top: track < define < execute < train, results < cli

Who does what, one place each:

- starts a task: execute/executor.py (local.py or slurm.py) runs the batch's script, whose
  execute/launcher.py runs the MLflow entry point, which calls train/task.py
- loads the user's script: define/loader.py (define/probe.py checks it before a batch)
- talks to SLURM: execute/slurm.py; to MLflow: track/mlflow_store.py (runs and experiments),
  track/mlflow_ship.py (a journal's calls), track/mlflow_ui.py (the UI's views),
  results/mlflow_results.py (the report's run, the model registry, describe's reads)
- decides who ships a journal, when and how: track/plan.py; ships: track/shipper.py
- serves MLflow: track/server.py starts `mlflow server` with track/server_app.py's app
  (MLflow's, plus the route that takes finished runs whole)
- heals records of tasks that died: execute/heal.py
- renders `netrain show`: results/show.py (from execute/status.py's tables)

A stage imports only stages below it (train and results never import each other); the
top-level modules errors, exits and version import no stage, and app (the user's
``Netrain``) sits above train. tests/unit/test_import_graph.py reads this line and checks it.
"""

from netrain.app import Netrain
from netrain.errors import NetrainError
from netrain.version import __version__

__all__ = ["Netrain", "NetrainError", "__version__"]
