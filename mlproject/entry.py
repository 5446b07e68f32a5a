"""MLflow entry point of a netrain batch (copied into every batch as mlproject/entry.py).

`mlflow run <batch> -e train -P ...` (or the sbatch script directly) runs this file; it runs
the batch's own snapshot of the user's main script for one array task.
"""

import sys
from pathlib import Path

from netrain.exits import run_main
from netrain.train.task import run_entry

if __name__ == "__main__":
    # ends without the interpreter's ~2 s teardown of TensorFlow (see netrain.exits)
    run_main(lambda: run_entry(Path(__file__).resolve().parent.parent, sys.argv[1:]),
             "netrain: task")
