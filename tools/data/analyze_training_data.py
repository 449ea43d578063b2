#!/usr/bin/env python3
"""The data analysis, at the path the seed's users type. The code lives in ``trainer.data.analysis``
(figures) and ``trainer.engine.analyze_cli`` (the command)."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.engine.analyze_cli import analyze_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(analyze_command())
