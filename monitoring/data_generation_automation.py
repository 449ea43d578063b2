#!/usr/bin/env python3
"""The data generation automation, at the path the seed's users type. The code lives in
``monitoring.autonomy.data_generation``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.autonomy.data_generation import datagen_command  # noqa: E402

if __name__ == "__main__":
    datagen_command()
