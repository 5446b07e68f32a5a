#!/usr/bin/env bash
# Create .venv (if missing) and install netrain with its test tools into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "setup: installing netrain and its dependencies into .venv (pip log: $log)" >&2
if ! { .venv/bin/python -m pip install -q --upgrade pip &&
       .venv/bin/python -m pip install -q -e ".[test]"; } >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" >&2 || true
  echo "setup: pip install failed (see above)" >&2
  exit 1
fi
# fail here, not later, if the install is broken
TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python -c "import netrain, keras, mlflow"
echo "setup: ok" >&2
