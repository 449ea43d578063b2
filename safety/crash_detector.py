#!/usr/bin/env python3
"""The crash detector, at the path the issue names: every crash (OOM, NaN, data, disk, killed, hang,
exception) classified and counted in status/crash_report.json, with what to do about each.

    python3 safety/crash_detector.py [run] [--base-dir DIR] [--once] [--json] [--interval S]
    python3 safety/crash_detector.py show [--json]

No subcommand means ``run``. The code lives in ``safety.crash`` (``trainctl crashes``).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.crash.cli import crashes_group  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args.insert(0, "run")
    crashes_group.main(args, prog_name="crash_detector.py")


if __name__ == "__main__":
    main()
