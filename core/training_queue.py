#!/usr/bin/env python3
"""The queue commands, at the path the seed's users type. The code lives in ``core.jobqueue.cli``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.jobqueue.cli import queue_group  # noqa: E402

if __name__ == "__main__":
    sys.exit(queue_group())
