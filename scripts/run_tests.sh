#!/usr/bin/env bash
# The README's test command: installs everything it needs (idempotent), then runs the whole suite.
#   scripts/run_tests.sh [pytest args...]
# Test order is shuffled (pytest-randomly prints its seed: rerun an order with --randomly-seed=N,
# or keep file order with -p no:randomly).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Debian's Chromium for the live monitor's browser tests (tests/test_live_monitor.py).
scripts/ensure_chromium.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# The layer contracts (pyproject.toml [tool.importlinter], ARCHITECTURE.md "Layers") before any test.
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
