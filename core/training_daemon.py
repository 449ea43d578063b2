#!/usr/bin/env python3
"""The training daemon, at the path the seed's users type. The code lives in ``core.daemon.daemon``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.daemon.daemon import daemon_group  # noqa: E402

if __name__ == "__main__":
    sys.exit(daemon_group())
