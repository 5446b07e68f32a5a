"""track: MLflow, off the training path. The journal every task writes, the shipper that
replays journals into MLflow (live, from the sync job, or by `netrain sync`; track.plan
decides who ships, when and how; track.task_shipper is the one a task starts), and the doors
to MLflow (mlflow_store, mlflow_ship, mlflow_ui, server, server_app): with
results/mlflow_results.py the only modules that import mlflow. It is the bottom stage: it
knows journals and runs, not batches, so every other stage may record through it."""
