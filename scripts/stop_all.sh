#!/usr/bin/env bash
# Stop the system cleanly: SIGTERM the watchdog, which stops the programs it started (the training
# daemon checkpoints at the next optimizer step, puts its file back at the head of its queue and
# exits 0); then stop anything of ours still running from .pids/ (only PIDs whose command line names
# one of our scripts). Waits up to --timeout seconds per program (default 330); --kill SIGKILLs what
# is left then.
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
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
exec "$PY" safety/daemon_watchdog.py stop --base-dir "$BASE_DIR" ${ARGS[@]+"${ARGS[@]}"}
