#!/usr/bin/env bash
# train_once.sh RECIPE RUN_DIR [FLAGS...]: train unless finished; resume when a checkpoint exists.
set -euo pipefail
recipe=$1 dir=$2; shift 2
bin=$(dirname "$0")/../.venv/bin
if [ -f "$dir/metrics.json" ]; then echo "done: $dir"; exit 0; fi
resume=()
[ -f "$dir/checkpoint/state.json" ] && resume=(--resume)
exec "$bin/edgecifar" train "$recipe" --out "$dir" --quiet "${resume[@]}" "$@"
