#!/usr/bin/env python3
"""The crash detector, at the path the issue names: every crash classified and counted in
status/crash_report.json, with what to do about each. The command line lives in
``safety.crash.cli`` (``trainctl crashes``); no subcommand means ``run``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.crash.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
