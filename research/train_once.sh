#!/usr/bin/env bash
# research/train_once.sh RECIPE RUN_DIR [FLAGS...]: train unless finished; resume when a checkpoint exists.
set -euo pipefail
recipe=$1 dir=$(realpath -m "$2"); shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$(dirname "$dir")"
# Two queues may share the machine: the first to reach a run owns it, the other moves on.
exec 9>"$dir.lock"
flock -n 9 || { echo "busy: $dir (another queue trains it)"; exit 0; }
if [ -f "$dir/metrics.json" ]; then echo "done: $dir"; exit 0; fi
resume=()
[ -f "$dir/checkpoint/state.json" ] && resume=(--resume)
cd "$root" && exec "$root/.venv/bin/python" -m research train "$recipe" --out "$dir" --quiet "${resume[@]}" "$@"
