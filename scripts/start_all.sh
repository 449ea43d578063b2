#!/usr/bin/env bash
# Start the system in the background: the training daemon and, when present, the inference server,
# the automated testing (evaluation) daemon and the deployment orchestrator.
#   scripts/start_all.sh [--base-dir DIR] [--demo] [--training-only] [--no-setup]
# --demo           drop a small generated sample file into inbox/ so training starts right away
# --training-only  start only the training daemon
# --no-setup       skip scripts/setup.sh (which creates .venv and builds models/tiny-qwen3 if missing)
# Idempotent: what is already running is left alone. PIDs in .pids/, output in logs/<name>.out.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_DIR=${TRAINER_BASE_DIR:-$PWD}
DEMO=0
SIDECARS=1
SETUP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$2; shift 2 ;;
    --demo) DEMO=1; shift ;;
    --training-only) SIDECARS=0; shift ;;
    --no-setup) SETUP=0; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
if [ "$SETUP" = 1 ]; then
  scripts/setup.sh
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$BASE_DIR/logs" "$BASE_DIR/.pids"

status=$("$PY" core/training_daemon.py status --base-dir "$BASE_DIR" --json)
if echo "$status" | grep -q '"running": true'; then
  echo "training daemon already running (pid $(echo "$status" | grep '"pid"' | head -1 | tr -dc '0-9'))"
else
  "$PY" core/training_daemon.py start --detach --base-dir "$BASE_DIR"
fi

if [ "$SIDECARS" = 1 ]; then
  "$PY" - "$BASE_DIR" <<'PYEOF'
import os, subprocess, sys
from pathlib import Path
base = Path(sys.argv[1])
# (name, script, arguments, PID file the service keeps in .pids/)
services = [
    ("inference_server", "inference/cli.py", ["--base-dir", str(base)], "inference_server.pid"),
    ("automated_testing", "monitoring/automated_testing_daemon.py", ["--base-dir", str(base)], "automated_testing.pid"),
    ("deployment_orchestrator", "monitoring/deployment_orchestrator.py", ["run", "--base-dir", str(base)],
     "deployment_orchestrator.pid"),
]

def running(pid_file: Path, script: str) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if script in cmd else None

for name, script, args, pid_name in services:
    pid_file = base / ".pids" / pid_name
    pid = running(pid_file, script)
    if pid:
        print(f"{name} already running (pid {pid})")
        continue
    out = open(base / "logs" / f"{name}.out", "ab")
    p = subprocess.Popen([sys.executable, script, *args], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    tmp = pid_file.with_name(f".{pid_name}.tmp")
    tmp.write_text(f"{p.pid}\n")
    os.replace(tmp, pid_file)
    print(f"{name} started (pid {p.pid}); output: {base / 'logs' / (name + '.out')}")
PYEOF
fi

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
