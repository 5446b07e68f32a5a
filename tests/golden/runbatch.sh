#!/bin/bash
# Submit every model of netrain batch 20240102-030405-abcd to SLURM, one array job per model.
# 'netrain submit' does the same, splits arrays over MaxArraySize and records job ids.
set -eu
cd "$(dirname "$0")"
sbatch --parsable scripts/classifier-clu_one-sbatch.sh
sbatch --parsable scripts/classifier-chransynth-sbatch.sh
sbatch --parsable scripts/autoencoder-classical-sbatch.sh
