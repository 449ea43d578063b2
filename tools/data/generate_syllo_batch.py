#!/usr/bin/env python3
"""The syllo batch generator, at the path the seed's users type. The code lives in ``syllo.generator``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from syllo.generator import syllo_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(syllo_command())
