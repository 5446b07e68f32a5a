#!/bin/bash
#SBATCH --job-name=classifier-clu_one-20240102-030405-abcd
#SBATCH --array=0-199
#SBATCH --chdir=/scratch/trainings/20240102-030405-abcd
#SBATCH --output=logs/%x_%A_%a.log
#SBATCH --error=logs/%x_%A_%a.log
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
# netrain batch 20240102-030405-abcd: model classifier.clu_one.
# 'bash <this script>' submits the array with sbatch (as runbatch.sh and netrain
# submit do); under sbatch it trains one array task; netrain run runs it locally.
set -u
batch_dir=/scratch/trainings/20240102-030405-abcd
# a batch moved or copied works where it lies: its own directory, found at run time
# (under SLURM the script runs as a copy, in --chdir, which submit sets to it)
here=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
if [ -n "${SLURM_JOB_ID:-}" ] && [ -f "$PWD/batch.yaml" ]; then batch_dir=$PWD
elif [ -f "$here/batch.yaml" ]; then batch_dir=$here; fi
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  command -v sbatch >/dev/null || { echo "netrain: sbatch is not on PATH: run this on a SLURM login node, or use netrain run" >&2; exit 2; }
  script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
  job=$(cd "$batch_dir" && sbatch --parsable --chdir="$batch_dir" "$script") || exit 1
  printf '%s %s\n' classifier.clu_one "${job%%;*}" >> "$batch_dir/records/runbatch-jobs.txt"
  echo classifier.clu_one": submitted array job ${job%%;*}"
  sync=$(cd "$batch_dir" && sbatch --parsable --dependency=afterany:"${job%%;*}",singleton --kill-on-invalid-dep=no --job-name=sync-20240102-030405-abcd --chdir=/scratch/trainings/20240102-030405-abcd --output=logs/sync_%j.log --error=logs/sync_%j.log '--wrap=export PATH=/opt/venv/bin:"$PATH"; exec /opt/venv/bin/python -m netrain sync /scratch/trainings/20240102-030405-abcd') && echo "  sync job ${sync%%;*}: ships the journals once the array ends"
  exit 0
fi
cd "$batch_dir" || exit 2
export MLFLOW_TRACKING_URI=sqlite:////scratch/trainings/mlflow.db
export MLFLOW_EXPERIMENT_ID=7
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# A SQLite store takes one writer (network filesystems do not keep its locks): on
# SLURM no task opens it; the sync job (or netrain sync --follow) ships the journals.
if [ -n "${SLURM_JOB_ID:-}" ]; then export NETRAIN_SHIP_LATER=always; fi
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1
export NETRAIN_BATCH_DIR="$batch_dir"
index=$(( SLURM_ARRAY_TASK_ID + ${NETRAIN_INDEX_OFFSET:-0} ))
export NETRAIN_LOG="${NETRAIN_LOG:-$batch_dir/logs/${SLURM_JOB_NAME:-local}_${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID}.log}"
export NETRAIN_REQUEUE=1
if [ "$index" -ge 0 ] && [ "$index" -lt 200 ]; then nnets=10; nb_epoch=5; epoch_samples=1000; intelligent=false; pack=false
else
  echo "netrain: array index $index is not a task of "classifier.clu_one >&2; exit 2
fi
export PATH=/opt/venv/bin:"$PATH"
# Run the task in its own process group so a signal reaches all of it: on SLURM's
# time-limit warning (USR1), scancel (TERM) or Ctrl-C (INT) it checkpoints and stops;
# after USR1 it requeues itself to resume (slurm.requeue).
set -m
/opt/venv/bin/python -m netrain.execute.launcher "$batch_dir" -e train --env-manager local --experiment-id "$MLFLOW_EXPERIMENT_ID" -P class=classifier -P architecture=clu_one -P nb_epoch="$nb_epoch" -P epoch_samples="$epoch_samples" -P nnets="$nnets" -P intelligent="$intelligent" -P trainingrun="$index" -P pack="$pack" &
child=$!
trap 'kill -USR1 -- -"$child" 2>/dev/null' USR1
trap 'kill -TERM -- -"$child" 2>/dev/null' TERM
trap 'kill -INT -- -"$child" 2>/dev/null' INT
while :; do
  wait "$child"; rc=$?
  kill -0 "$child" 2>/dev/null || break
done
# Stopped by the time-limit warning with its checkpoints written: back in the queue.
if [ "$rc" -eq 138 ] && [ "$NETRAIN_REQUEUE" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  job="${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_JOB_ID:+_$SLURM_ARRAY_TASK_ID}"
  echo "netrain: requeueing SLURM job $job to resume from its checkpoints"
  scontrol requeue "$job"
fi
exit "$rc"
