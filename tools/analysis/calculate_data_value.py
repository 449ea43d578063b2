#!/usr/bin/env python3
"""The data value report, at the path the seed's users type. The code lives in
``monitoring.evaluation.data_value``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitoring.evaluation.data_value import value_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(value_command())
