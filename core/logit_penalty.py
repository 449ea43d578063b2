#!/usr/bin/env python3
"""The generation logits processors, at the path the seed's users type. The code lives in ``trainer.profiles.logit_penalty``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.profiles.logit_penalty import *  # noqa: E402,F401,F403
