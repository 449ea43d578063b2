#!/usr/bin/env python3
"""The config validator, at the path the seed's users type. The code lives in ``trainer.config.validate_cli``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config.validate_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
