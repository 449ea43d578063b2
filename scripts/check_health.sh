#!/usr/bin/env bash
# Health check for shell users (cron, monitoring agents): exit 0 healthy, 1 degraded, 2 broken.
#   scripts/check_health.sh [--base-dir DIR] [--json] [--deep] [--verbose] [--stale-after S]
# Same as: trainctl health ... / python3 safety/comprehensive_health_check.py ...
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" safety/comprehensive_health_check.py "$@"
