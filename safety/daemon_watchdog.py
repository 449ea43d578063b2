#!/usr/bin/env python3
"""The watchdog, at the path the issue names: it starts and supervises every process of the system.
The command line lives in ``safety.supervision.cli`` (``trainctl watchdog``); no subcommand means
``run``: ``python3 safety/daemon_watchdog.py --base-dir .``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.supervision.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
