#!/bin/bash
#SBATCH --job-name=autoencoder-classical-retrain1-20240102-030405-abcd
#SBATCH --array=0-149%4
#SBATCH --chdir=/scratch/trainings/20240102-030405-abcd
#SBATCH --output=logs/%x_%A_%a.log
#SBATCH --error=logs/%x_%A_%a.log
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --partition=gpu
#SBATCH --time=02:00:00
#SBATCH --mem=8G
#SBATCH --cpus-per-task=4
#SBATCH --account=proj-42
#SBATCH --gres=gpu:a100:1
#SBATCH --constraint=a100
#SBATCH --exclusive
# netrain batch 20240102-030405-abcd: model autoencoder.classical.
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
  echo autoencoder.classical-retrain1": submitted array job ${job%%;*}"
  exit 0
fi
cd "$batch_dir" || exit 2
export MLFLOW_TRACKING_URI=http://tracking.example:5000
export MLFLOW_EXPERIMENT_ID=12
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONUNBUFFERED=1
export NETRAIN_BATCH_DIR="$batch_dir"
index=$(( SLURM_ARRAY_TASK_ID + ${NETRAIN_INDEX_OFFSET:-0} ))
export NETRAIN_LOG="${NETRAIN_LOG:-$batch_dir/logs/${SLURM_JOB_NAME:-local}_${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID}.log}"
export NETRAIN_REQUEUE=1
if [ "$index" -ge 0 ] && [ "$index" -lt 100 ]; then nnets=45; nb_epoch=20; epoch_samples=5000; intelligent=true; pack=false
elif [ "$index" -ge 100 ] && [ "$index" -lt 150 ]; then nnets=10; nb_epoch=30; epoch_samples=5000; intelligent=false; pack=true
else
  echo "netrain: array index $index is not a task of "autoencoder.classical >&2; exit 2
fi
eval "$(conda shell.bash hook)"
conda activate netrain-gpu
# Run the task in its own process group so a signal reaches all of it: on SLURM's
# time-limit warning (USR1), scancel (TERM) or Ctrl-C (INT) it checkpoints and stops;
# after USR1 it requeues itself to resume (slurm.requeue).
set -m
python mlproject/entry.py --class autoencoder --architecture classical --nb-epoch "$nb_epoch" --epoch-samples "$epoch_samples" --nnets "$nnets" --intelligent "$intelligent" --trainingrun "$index" --net-index 3 --retrain-of abc123 --pack "$pack" &
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
