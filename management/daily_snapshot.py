#!/usr/bin/env python3
"""One snapshot of current_model and config.json a day, kept by policy.

    python3 management/daily_snapshot.py [--base-dir D] [--json]     (cron / a timer: any time of day)
    trainctl snapshot

Snapshots are backups (management/backup_manager.py) under ``backups/snapshots/snapshot-<YYYY-MM-DD>``:
running this twice on one UTC day makes one snapshot. Kept (config ``retention``): the newest
``snapshot_keep_days`` days, plus the oldest snapshot of each of the ``snapshot_keep_weeks`` ISO
weeks before those (a grandfather-father-son scheme); the rest are deleted.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

import click

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.fs_tree import remove_tree  # noqa: E402
from foundation.paths import Paths  # noqa: E402
from management.backup_manager import create_backup  # noqa: E402

PREFIX = "snapshot-"


def snapshots_root(paths: Paths) -> Path:
    return paths.backups / "snapshots"


def snapshot_days(paths: Paths) -> list[date]:
    out = []
    root = snapshots_root(paths)
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(PREFIX) and (d / "backup.json").is_file():
                try:
                    out.append(date.fromisoformat(d.name[len(PREFIX):]))
                except ValueError:
                    pass
    return sorted(out)


def days_to_keep(days: list[date], keep_days: int, keep_weeks: int) -> set[date]:
    """The policy (pure): newest ``keep_days`` days, then the oldest day of each of ``keep_weeks`` weeks."""
    newest_first = sorted(set(days), reverse=True)
    keep = set(newest_first[:keep_days])
    weeks: dict[tuple[int, int], date] = {}
    for d in newest_first[keep_days:]:
        weeks[d.isocalendar()[:2]] = d  # newest first, so the last write is the week's oldest day
    for wk in sorted(weeks, reverse=True)[:keep_weeks]:
        keep.add(weeks[wk])
    return keep


def take_snapshot(paths: Paths, keep_days: int, keep_weeks: int,
                  clock: Callable[[], float] = time.time) -> dict:
    """Today's snapshot (unless there is one), then the policy. Returns what happened."""
    today = datetime.fromtimestamp(clock(), timezone.utc).date()
    root = snapshots_root(paths)
    name = f"{PREFIX}{today.isoformat()}"
    created = None
    if not (root / name / "backup.json").is_file():
        created = str(create_backup(paths, "daily snapshot", root=root, clock=clock, name=name))
    keep = days_to_keep(snapshot_days(paths), keep_days, keep_weeks)
    deleted = []
    for d in snapshot_days(paths):
        if d not in keep:
            folder = root / f"{PREFIX}{d.isoformat()}"
            remove_tree(folder)
            deleted.append(folder.name)
    return {"today": name, "created": created, "deleted": deleted,
            "kept": [f"{PREFIX}{d.isoformat()}" for d in sorted(keep)]}


@click.command("snapshot")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def snapshot_command(base_dir: str | None, as_json: bool) -> None:
    """Take today's snapshot of current_model and config.json (once a day), then apply the keep policy."""
    from trainer.config.click_load import cli_config
    paths = Paths.from_base(base_dir)
    r = cli_config(paths.base).retention
    out = take_snapshot(paths, r.snapshot_keep_days, r.snapshot_keep_weeks)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"{out['today']}: {'created' if out['created'] else 'already taken'}; "
                   f"deleted {len(out['deleted'])}, kept {len(out['kept'])}")


main = snapshot_command

if __name__ == "__main__":
    main()
