#!/usr/bin/env python3
"""The data validator, at the path the seed's users type. The code lives in ``trainer.engine.validate_cli``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.engine.validate_cli import validate_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(validate_command())
