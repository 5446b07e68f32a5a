#!/bin/bash
# Submit every model of netrain batch 20240102-030405-abcd to SLURM, one array job per model.
# 'netrain submit' does the same, splits arrays over MaxArraySize and records job ids.
# Each model's script submits itself when run outside SLURM.
set -eu
cd "$(dirname "$0")"
unset SLURM_ARRAY_TASK_ID
bash scripts/classifier-clu_one-sbatch.sh
bash scripts/classifier-chransynth-sbatch.sh
bash scripts/autoencoder-classical-sbatch.sh
