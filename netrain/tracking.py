"""Old name of netrain.mlflow_store (kept until task.py imports the new one)."""

from netrain.mlflow_store import RunHandle, Tracker, client, quiet_environment

__all__ = ["RunHandle", "Tracker", "client", "quiet_environment"]
