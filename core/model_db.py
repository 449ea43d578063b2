#!/usr/bin/env python3
"""The model registry, at the path the seed's users type. The code lives in ``foundation.model_db``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.model_db import *  # noqa: E402,F401,F403
from foundation.model_db_cli import models_group  # noqa: E402

if __name__ == "__main__":
    sys.exit(models_group())
