#!/usr/bin/env python3
"""The confidence calibrator, at the path the seed's users type. The code lives in ``monitoring.evaluation.cli``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.evaluation.cli import calibration_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(calibration_command())
