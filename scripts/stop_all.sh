#!/usr/bin/env bash
# Stop the system cleanly. The training daemon gets SIGTERM: it checkpoints at the next optimizer
# step, puts the file back at the head of its queue and exits 0. The sidecars started by
# scripts/start_all.sh (inference server, automated testing, deployment orchestrator) get SIGTERM.
# Waits up to --timeout seconds (default 330) for the daemon; --kill SIGKILLs what is left then.
#   scripts/stop_all.sh [--base-dir DIR] [--timeout S] [--kill]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BASE_DIR=${TRAINER_BASE_DIR:-$PWD}
TIMEOUT=330
KILL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --kill) KILL=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
"$PY" - "$BASE_DIR" "$KILL" <<'PYEOF'
import os, signal, sys, time
from pathlib import Path
base, kill = Path(sys.argv[1]), sys.argv[2] == "1"
services = [("deployment_orchestrator", "monitoring/deployment_orchestrator.py"),
            ("automated_testing", "monitoring/automated_testing_daemon.py"), ("inference_server", "inference/cli.py")]
sent = []
for name, script in services:
    try:
        pid = int((base / ".pids" / f"{name}.pid").read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        continue
    if script not in cmd:
        continue  # a stale PID file naming another process: never signal it
    os.kill(pid, signal.SIGTERM)
    sent.append((name, pid))
deadline = time.monotonic() + 30
for name, pid in sent:
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists() and kill:
        os.kill(pid, signal.SIGKILL)
    print(f"{name} (pid {pid}) stopped")
PYEOF
ARGS=(--timeout "$TIMEOUT")
[ "$KILL" = 1 ] && ARGS+=(--kill)
exec "$PY" core/training_daemon.py stop --base-dir "$BASE_DIR" "${ARGS[@]}"
