#!/usr/bin/env python3
"""The comprehensive health check, at the path the issue names (also ``trainctl health`` and
``scripts/check_health.sh``). Exit 0 healthy, 1 degraded, 2 broken; ``--json``; ``--deep``.
The code lives in ``safety.health``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.health.cli import health_command  # noqa: E402

if __name__ == "__main__":
    health_command(prog_name="comprehensive_health_check.py")
