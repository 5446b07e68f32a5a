#!/bin/bash
#SBATCH --job-name=classifier-clu_one-20240102-030405-abcd
#SBATCH --array=0-199
#SBATCH --chdir=/scratch/trainings/20240102-030405-abcd
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.out
#SBATCH --signal=B:USR1@120
# netrain batch 20240102-030405-abcd: model classifier.clu_one.
# Submit with sbatch (runbatch.sh, netrain submit) or run locally with netrain run.
set -u
batch_dir=/scratch/trainings/20240102-030405-abcd
cd "$batch_dir" || exit 2
export MLFLOW_TRACKING_URI=sqlite:////scratch/trainings/mlflow.db
export MLFLOW_EXPERIMENT_ID=7
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1
export NETRAIN_BATCH_DIR="$batch_dir"
: "${SLURM_ARRAY_TASK_ID:?is not set: submit this script with sbatch, or use netrain run}"
index=$(( SLURM_ARRAY_TASK_ID + ${NETRAIN_INDEX_OFFSET:-0} ))
export NETRAIN_LOG="${NETRAIN_LOG:-$batch_dir/logs/${SLURM_JOB_NAME:-local}_${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID}.out}"
if [ "$index" -ge 0 ] && [ "$index" -lt 200 ]; then nnets=10; nb_epoch=5; epoch_samples=1000; intelligent=false; pack=false
else
  echo "netrain: array index $index is not a task of "classifier.clu_one >&2; exit 2
fi
export PATH=/opt/venv/bin:"$PATH"
# Run the task in its own process group so a signal reaches all of it: SLURM's
# time-limit warning (USR1), scancel (TERM) and Ctrl-C close its MLflow runs as KILLED.
set -m
/opt/venv/bin/python -m netrain.launch "$batch_dir" -e train --env-manager local --experiment-id "$MLFLOW_EXPERIMENT_ID" -P class=classifier -P architecture=clu_one -P nb_epoch="$nb_epoch" -P epoch_samples="$epoch_samples" -P nnets="$nnets" -P intelligent="$intelligent" -P trainingrun="$index" -P pack="$pack" &
child=$!
trap 'kill -TERM -- -"$child" 2>/dev/null' USR1 TERM INT
while :; do
  wait "$child"; rc=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$rc"
