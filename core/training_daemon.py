#!/usr/bin/env python3
"""The training daemon, at the path the seed's users type. The command line lives in
``core.daemon.cli``, the daemon in ``core.daemon.loop``. With no subcommand it starts the daemon
in the foreground: ``nohup python3 core/training_daemon.py --base-dir . > logs/training_output.log 2>&1 &``."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.daemon.cli import daemon_group  # noqa: E402

if __name__ == "__main__":
    sys.exit(daemon_group())
