#!/usr/bin/env python3
"""The system's state over time, at the path the seed's users type:

    python3 tools/analysis/state_tracker.py --check [--base-dir DIR] [--json]

``--check`` records a snapshot in logs/state_history.jsonl and reports what changed since the last
one; without it, the report is shown but nothing is recorded. The code lives in ``safety.state_history``.
"""
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import click  # noqa: E402

from foundation.paths import Paths  # noqa: E402
from safety.state_history import changes, last_snapshot, record, render, snapshot  # noqa: E402


@click.command("state_tracker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--check", is_flag=True, help="Record a snapshot and report what changed since the last check.")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--json", "as_json", is_flag=True, help="Print {snapshot, previous_at, changes} as JSON.")
def main(check: bool, base_dir: str | None, as_json: bool) -> None:
    """What changed in the system since the last check (status files, queue, deployment, registry, disk)."""
    paths = Paths.from_base(base_dir)
    if not paths.base.is_dir():
        raise click.UsageError(f"base dir {paths.base} does not exist")
    prev = last_snapshot(paths)
    snap = snapshot(paths)
    diff = changes(prev, snap)
    if check:
        record(paths, snap)
    if as_json:
        click.echo(json.dumps({"snapshot": snap, "previous_at": (prev or {}).get("at"), "changes": diff,
                               "recorded": check}, indent=2, default=str))
    else:
        click.echo(render(prev, snap, diff) + ("" if check else "\n(not recorded: add --check)"))


if __name__ == "__main__":
    main()
