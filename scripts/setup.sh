#!/usr/bin/env bash
# Create .venv (if missing) and install netrain with its test tools into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -c "import netrain, keras, mlflow" # fail here, not later, if the install broke
