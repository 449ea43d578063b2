#!/usr/bin/env python3
"""Build or verify the fixed validation suite (``build`` / ``verify``). The code lives in ``syllo.suite``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from syllo.suite import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
