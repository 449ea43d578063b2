#!/usr/bin/env python3
"""The self correction loop at the path the seed's users type; the code lives in
``monitoring.autonomy.self_correction`` (its docstring documents the status file).

    python3 monitoring/self_correction_loop.py [--base-dir D] [--once] [--json]
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.autonomy.self_correction import selfcorrect_command  # noqa: E402

if __name__ == "__main__":
    selfcorrect_command()
