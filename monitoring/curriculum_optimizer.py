#!/usr/bin/env python3
"""The curriculum optimizer at the path the seed's users type; the code lives in
``monitoring.autonomy.curriculum`` (its docstring documents the status file).

    python3 monitoring/curriculum_optimizer.py [--base-dir D] [--once] [--json]
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.autonomy.curriculum import curriculum_command  # noqa: E402

if __name__ == "__main__":
    curriculum_command()
