#!/usr/bin/env python3
"""What checkpoint retention would delete, and why; deletes only with ``--apply``.

    python3 management/safe_checkpoint_cleanup.py [--base-dir D] [--json] [--apply]
    trainctl cleanup [--apply]

Same policy and code as the disk manager (management/checkpoint_retention.py, config section
``retention``). ``--apply`` backs up current_model and config.json first (backup manager; hard
links, so it costs no space) and marks the deleted checkpoints in the model_db.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.paths import Paths  # noqa: E402


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@click.command("cleanup")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--apply", "do_apply", is_flag=True, help="Delete (default: a dry run that only prints).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def cleanup_command(base_dir: str | None, do_apply: bool, as_json: bool) -> None:
    """Checkpoint cleanup by the retention policy: a dry run unless --apply."""
    from management.backup_manager import create_backup, prune_backups
    from management.checkpoint_retention import Policy, run_retention
    from trainer.config.click_load import cli_config
    paths = Paths.from_base(base_dir)
    cfg = cli_config(paths.base)
    backup = None
    if do_apply:
        backup = str(create_backup(paths, "before checkpoint cleanup", label="pre-cleanup"))
        prune_backups(paths, cfg.retention.keep_backups)
    report = run_retention(paths, Policy.from_config(cfg), dry_run=not do_apply)
    report["backup"] = backup
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    plan = report["plan"]
    verb = "deleted" if do_apply else "would delete"
    done = report["deleted"] if do_apply else plan["delete"]
    for d in done:
        click.echo(f"{verb} {d['path']} ({_mib(d['bytes'])}): {d['reason']}")
    for rel, why in sorted(plan["keep"].items()):
        click.echo(f"keep   {rel}: {'; '.join(why)}")
    total = sum(d["bytes"] for d in done)
    click.echo(f"{len(done)} folder(s), {_mib(total)} {verb}; checkpoints use {_mib(plan['total_bytes'])}"
               + ("" if do_apply else " (dry run: pass --apply to delete)"))


main = cleanup_command

if __name__ == "__main__":
    main()
