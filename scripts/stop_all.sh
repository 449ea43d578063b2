#!/usr/bin/env bash
# Stop the training daemon cleanly: SIGTERM -> checkpoint at the next optimizer step, the file goes
# back to the head of its queue, exit 0. Waits up to --timeout seconds (default 330), then
# reports failure (or kills with --kill).
#   scripts/stop_all.sh [--base-dir DIR] [--timeout S] [--kill]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BASE_DIR=${TRAINER_BASE_DIR:-$PWD}
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$2; shift 2 ;;
    --timeout) ARGS+=(--timeout "$2"); shift 2 ;;
    --kill) ARGS+=(--kill); shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
exec "$PY" core/training_daemon.py stop --base-dir "$BASE_DIR" "${ARGS[@]}"
