#!/usr/bin/env python3
"""The eta estimator, at the path the seed's users type. The code lives in ``foundation.time_estimator``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.time_estimator import *  # noqa: E402,F401,F403
