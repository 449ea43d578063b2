#!/usr/bin/env python3
"""The anti-stuck monitor, at the path the issue names: a process whose heartbeat is fresh but whose
work does not progress is detected, its stacks dumped to logs/, and it is killed as a process group.

    python3 safety/anti_stuck_monitor.py [run] [--base-dir DIR] [--once] [--json] [--interval S]
    python3 safety/anti_stuck_monitor.py status [--json]

No subcommand means ``run``. The code lives in ``safety.anti_stuck`` (``trainctl stuck``).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety.anti_stuck.cli import stuck_group  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args.insert(0, "run")
    stuck_group.main(args, prog_name="anti_stuck_monitor.py")


if __name__ == "__main__":
    main()
