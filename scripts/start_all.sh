#!/usr/bin/env bash
# Start the training daemon in the background (PID in .pids/training_daemon.pid, logs in logs/).
#   scripts/start_all.sh [--base-dir DIR] [--demo]
# --demo drops a small generated sample file into inbox/ so training starts right away.
# Idempotent: a daemon that is already running is left alone (exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BASE_DIR=${TRAINER_BASE_DIR:-$PWD}
DEMO=0
while [ $# -gt 0 ]; do
  case "$1" in
    --base-dir) BASE_DIR=$2; shift 2 ;;
    --demo) DEMO=1; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
status=$("$PY" core/training_daemon.py status --base-dir "$BASE_DIR" --json)
if echo "$status" | grep -q '"running": true'; then
  echo "training daemon already running: $(echo "$status" | grep '"pid"' | head -1 | tr -dc '0-9')"
else
  "$PY" core/training_daemon.py start --detach --base-dir "$BASE_DIR"
fi
if [ "$DEMO" = 1 ]; then
  "$PY" - "$BASE_DIR" <<'PYEOF'
import json, random, sys, time
from pathlib import Path
base = Path(sys.argv[1])
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
rng = random.Random(0)
lines = []
for i in range(64):
    q = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
    lines.append(json.dumps({"messages": [{"role": "user", "content": f"Repeat in capitals: {q}"},
                                          {"role": "assistant", "content": q.upper()}]}))
inbox = base / "inbox"
name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
tmp = inbox / f".{name}.tmp"
tmp.write_text("\n".join(lines) + "\n")
tmp.rename(inbox / name)  # complete by rename: the daemon never sees half a file
print(f"demo: dropped inbox/{name} (64 examples); watch: python3 core/training_controller.py status")
PYEOF
fi
