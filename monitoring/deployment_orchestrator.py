#!/usr/bin/env python3
"""The deployment orchestrator, at the path the seed's users type. The code lives in
``monitoring.deployment`` (the daemon in ``orchestrator``, this CLI in ``cli``)."""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.deployment.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())  # no subcommand: run the daemon (`--base-dir . --interval 600`)
