#!/usr/bin/env python3
"""Pause / resume / stop / skip / status, at the path the seed's users type. The code lives in ``core.daemon.controller``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.daemon.controller import controller_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(controller_cli())
