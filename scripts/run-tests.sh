#!/usr/bin/env bash
# Set up .venv and run lint, types and the whole test suite.
# As root (or in CI) it also installs and starts the local SLURM test cluster, so the SLURM
# tests run; elsewhere they skip with a message. NETRAIN_REQUIRE_SLURM=1 makes them mandatory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check netrain mlproject tests bench
.venv/bin/mypy
if [ "$(id -u)" = 0 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  # Debian's headless Chromium and its driver, for the browser test of `netrain ui`.
  echo "run-tests: installing chromium and chromium-driver (apt)" >&2
  apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      chromium chromium-driver >/dev/null ||
    echo "run-tests: could not install chromium; the browser test will say so" >&2
fi
cleanup=()
trap 'for c in ${cleanup[@]+"${cleanup[@]}"}; do eval "$c"; done' EXIT
if [ "${NETRAIN_SLURM:-auto}" != "off" ] && [ "$(id -u)" = 0 ] && [ -f scripts/slurm-cluster.sh ]; then
  # A small MaxArraySize so the test of split arrays stays small.
  if bash scripts/slurm-cluster.sh install >&2 &&
      out=$(NETRAIN_SLURM_MAX_ARRAY_SIZE=${NETRAIN_SLURM_MAX_ARRAY_SIZE:-4} \
            bash scripts/slurm-cluster.sh start); then
    eval "$out"
    cleanup+=("bash scripts/slurm-cluster.sh stop >&2 || true")
  elif [ "${NETRAIN_REQUIRE_SLURM:-0}" = 1 ]; then
    echo "run-tests: the local SLURM cluster did not come up" >&2
    exit 1
  fi
fi
if [ "${NETRAIN_POSTGRES:-auto}" != "off" ] && [ "$(id -u)" = 0 ] && [ -z "${NETRAIN_TEST_PG_URI:-}" ]; then
  # A private PostgreSQL cluster on loopback for the server-on-PostgreSQL tests.
  if bash scripts/postgres.sh install >&2 && out=$(bash scripts/postgres.sh start); then
    eval "$out"
    cleanup+=("bash scripts/postgres.sh stop >&2 || true")
  elif [ "${NETRAIN_REQUIRE_SLURM:-0}" = 1 ]; then
    echo "run-tests: the PostgreSQL test cluster did not come up" >&2
    exit 1
  fi
fi
if [ "${NETRAIN_REQUIRE_SLURM:-0}" = 1 ] && [ "$(id -u)" = 0 ]; then
  # The unprivileged-user SLURM test runs this checkout's .venv as user netrain-ci. Let
  # that user traverse (o+x, not list) the folders leading to the interpreter and the repo
  # (pyenv keeps Python under /root, which is 0700).
  for target in "$(readlink -f .venv/bin/python)" "$PWD/.venv/bin/python"; do
    d=$(dirname "$target")
    while [ "$d" != "/" ]; do
      if [ -d "$d" ] && ! runuser -u netrain-ci -- test -x "$d" 2>/dev/null; then
        echo "run-tests: chmod o+x $d (for the unprivileged SLURM test)" >&2
        chmod o+x "$d"
      fi
      d=$(dirname "$d")
    done
  done
fi
# Two workers (pytest-xdist): most tests wait on a training process, a server or SLURM, so
# two at a time use both cores; each module stays on one worker, the SLURM tests together.
# (tests/conftest.py's pytest_xdist_make_scheduler keeps them so).
.venv/bin/python -m pytest -n "${NETRAIN_TEST_WORKERS:-2}" --durations=15 "$@"
