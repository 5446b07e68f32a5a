#!/bin/bash
# Submit every model of netrain batch 20240102-030405-abcd to SLURM, one array job per model.
# 'netrain submit' does the same, splits arrays over MaxArraySize and records job ids.
set -eu
cd "$(dirname "$0")"
submit() {
  job=$(sbatch --parsable "scripts/$2")
  echo "$1: submitted array job $job"
  printf '%s %s\n' "$1" "${job%%;*}" >> records/runbatch-jobs.txt
}
submit classifier.clu_one classifier-clu_one-sbatch.sh
submit classifier.chransynth classifier-chransynth-sbatch.sh
submit autoencoder.classical autoencoder-classical-sbatch.sh
