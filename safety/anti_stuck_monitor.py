#!/usr/bin/env python3
"""The anti-stuck monitor, at the path the issue names: work that does not progress while its
heartbeat is fresh is detected, its stacks dumped to logs/ and its process group killed. The command
line lives in ``safety.anti_stuck.cli`` (``trainctl stuck``); no subcommand means ``run``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.anti_stuck.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
