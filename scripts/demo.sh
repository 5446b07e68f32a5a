#!/usr/bin/env bash
# The whole netrain workflow on this machine, in a few minutes: install, create a project
# with the example models, generate a batch and train it locally (SQLite tracking), show it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
DEMO=${NETRAIN_DEMO_DIR:-demo}
if [ ! -f "$DEMO/netrain.yaml" ]; then
  netrain init "$DEMO" >/dev/null
fi
cd "$DEMO"
batch=$(netrain generate \
  --models "classifier.clu_one=2, chransynth=2, autoencoder.classical=2" \
  --array 2 --nb-epoch 5 --epoch-samples 1000 --desc "netrain demo: the seed's three models")
netrain run "$batch"
netrain show
netrain show "$batch" --all
netrain report "$batch"
echo
echo "Browse the runs:  cd $DEMO && ../.venv/bin/netrain ui $(basename "$batch")"
