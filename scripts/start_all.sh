#!/usr/bin/env bash
# Start the system in the background: the watchdog (safety/daemon_watchdog.py), which starts and
# supervises the training daemon, the inference server, the automated testing (evaluation) daemon
# and the deployment orchestrator, and restarts any that dies (back-off; FATAL after 5 quick failures).
#   scripts/start_all.sh [--base-dir DIR] [--demo] [--training-only] [--no-setup]
# --demo           drop a small generated sample file into inbox/ so training starts right away
# --training-only  supervise only the training daemon
# --no-setup       skip scripts/setup.sh (which creates .venv and builds models/tiny-qwen3 if missing)
# Idempotent: a running watchdog is left alone. PID in .pids/watchdog.pid, output in logs/watchdog.out
# (each program's in logs/<name>.out). State: trainctl watchdog status. Stop: scripts/stop_all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_DIR=${TRAINER_BASE_DIR:-$PWD}
DEMO=0
WD_ARGS=()
SETUP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$2; shift 2 ;;
    --demo) DEMO=1; shift ;;
    --training-only) WD_ARGS+=(--training-only); shift ;;
    --no-setup) SETUP=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
if [ "$SETUP" = 1 ]; then
  scripts/setup.sh
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BASE_DIR=$(cd "$BASE_DIR" && pwd)
mkdir -p "$BASE_DIR/logs" "$BASE_DIR/.pids"
export TRAINER_BASE_DIR=$BASE_DIR

wd_pid() {  # the running watchdog's PID (it holds .pids/watchdog.lock), or nothing
  "$PY" -c 'import sys; from foundation.single_instance import running_pid as r
p = r(sys.argv[1], "watchdog"); print(p or "")' "$BASE_DIR/.pids"
}

pid=$(wd_pid)
if [ -n "$pid" ]; then
  echo "watchdog already running (pid $pid); its programs:"
  VERB="already running"
else
  # A new session, detached from this shell: the watchdog outlives it and a Ctrl-C here.
  setsid nohup "$PY" safety/daemon_watchdog.py run --base-dir "$BASE_DIR" ${WD_ARGS[@]+"${WD_ARGS[@]}"} \
    >>"$BASE_DIR/logs/watchdog.out" 2>&1 </dev/null &
  launched=$!
  for _ in $(seq 1 300); do
    pid=$(wd_pid)
    [ -n "$pid" ] && break
    if ! kill -0 "$launched" 2>/dev/null; then
      echo "the watchdog exited at once; last lines of $BASE_DIR/logs/watchdog.out:" >&2
      tail -n 20 "$BASE_DIR/logs/watchdog.out" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -n "$pid" ] || { echo "the watchdog did not start within 30s (see $BASE_DIR/logs/watchdog.out)" >&2; exit 1; }
  echo "watchdog started (pid $pid); output: $BASE_DIR/logs/watchdog.out"
  VERB=started
fi
"$PY" safety/daemon_watchdog.py wait --base-dir "$BASE_DIR" --timeout 180 --verb "$VERB"

if [ "$DEMO" = 1 ]; then
  # 300 syllogism puzzles (never items of the validation suite), written aside, then renamed into
  # inbox/ in one step so the daemon never sees half a file.
  name="demo-$(date +%Y%m%d-%H%M%S).jsonl"
  mkdir -p "$BASE_DIR/data/generated"
  "$PY" tools/data/generate_syllo_batch.py --count 300 --seed "$(date +%s)" \
    --difficulty easy:0.6,medium:0.4 --output "$BASE_DIR/data/generated/$name" >/dev/null
  mv "$BASE_DIR/data/generated/$name" "$BASE_DIR/inbox/$name"
  echo "demo: dropped inbox/$name (300 syllogism puzzles); watch: .venv/bin/trainctl status"
fi
