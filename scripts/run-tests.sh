#!/usr/bin/env bash
# Set up .venv and run lint, types and the whole test suite.
# As root (or in CI) it also installs and starts the local SLURM test cluster, so the SLURM
# tests run; elsewhere they skip with a message. NETRAIN_REQUIRE_SLURM=1 makes them mandatory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check netrain mlproject tests bench
.venv/bin/mypy
if [ "${NETRAIN_SLURM:-auto}" != "off" ] && [ "$(id -u)" = 0 ] && [ -f scripts/slurm-cluster.sh ]; then
  if bash scripts/slurm-cluster.sh install >&2 && out=$(bash scripts/slurm-cluster.sh start); then
    eval "$out"
    trap 'bash scripts/slurm-cluster.sh stop >&2 || true' EXIT
  elif [ "${NETRAIN_REQUIRE_SLURM:-0}" = 1 ]; then
    echo "run-tests: the local SLURM cluster did not come up" >&2
    exit 1
  fi
fi
.venv/bin/python -m pytest "$@"
