"""netrain: train many Keras networks as SLURM array jobs (or locally), every network an MLflow run.

Importing this package is cheap: TensorFlow, Keras and MLflow are imported only where a
network is trained or a run is recorded.
"""

from netrain.app import Netrain
from netrain.errors import NetrainError

__version__ = "0.1.0"
__all__ = ["Netrain", "NetrainError", "__version__"]
