#!/usr/bin/env bash
# train_once.sh RECIPE RUN_DIR [FLAGS...]: train unless finished; resume when a checkpoint exists.
set -euo pipefail
recipe=$1 dir=$2; shift 2
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$(dirname "$dir")"
# Two queues may share the machine: the first to reach a run owns it, the other moves on.
exec 9>"$dir.lock"
flock -n 9 || { echo "busy: $dir (another queue trains it)"; exit 0; }
if [ -f "$dir/metrics.json" ]; then echo "done: $dir"; exit 0; fi
resume=()
[ -f "$dir/checkpoint/state.json" ] && resume=(--resume)
exec "$bin/edgecifar" train "$recipe" --out "$dir" --quiet "${resume[@]}" "$@"
