#!/usr/bin/env python3
"""The watchdog, at the path the issue names: supervises every process of the system.

    python3 safety/daemon_watchdog.py [run] [--base-dir DIR] [--once] [--training-only] [--programs FILE]
    python3 safety/daemon_watchdog.py status|reset NAME

No subcommand means ``run``. The code lives in ``safety.supervision`` (``trainctl watchdog``).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.supervision.cli import watchdog_group  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args.insert(0, "run")
    watchdog_group.main(args, prog_name="daemon_watchdog.py")


if __name__ == "__main__":
    main()
