"""Backups of ``models/current_model/`` and ``config.json`` before risky operations, and restore.

    backups/backup-<UTC stamp>-<label>/   current_model/ (hard links) + config.json + backup.json

Who backs up what before a risky operation:

* ``trainctl cleanup --apply`` (management/safe_checkpoint_cleanup.py) and ``trainctl version
  restore`` call :func:`create_backup` first; daily snapshots (management/daily_snapshot.py) are
  backups made once a day.
* Replacing current_model after a job (core/daemon/model_swap.py) keeps the previous model as
  ``models/current_model.previous/`` itself (core cannot import management: layers), until the next
  swap succeeded.
* A config edit (``trainctl config edit`` / ``config migrate``, trainer/config/editing.py) copies the
  previous config.json to ``backups/config-<stamp>.json`` itself, for the same reason.

Why hard links: current_model is only ever replaced by rename, never written in place, so a hard
link is a true copy of the old weights that costs no disk space until the model is replaced. A
backup is written as a ``.tmp-*`` folder and renamed into place, so a listed backup is complete.
A restore first backs up what it replaces, then swaps by rename (pause training first: a job
that starts mid-restore reads whichever model is there).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import click

from foundation.atomic_io import atomic_write_json, fsync_dir, read_json
from foundation.fs_tree import link_tree, remove_tree, replace_dir
from foundation.paths import Paths
from foundation.status_io import utc_now_iso

PREFIX = "backup-"
MANIFEST = "backup.json"
LABEL_RE = re.compile(r"[^A-Za-z0-9._-]+")


class BackupError(RuntimeError):
    pass


def _stamp(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def create_backup(paths: Paths, reason: str, *, label: str = "", root: Path | None = None,
                  clock: Callable[[], float] = time.time, name: str | None = None) -> Path:
    """Back up current_model (when it has weights) and config.json; returns the backup folder."""
    root = root or paths.backups
    root.mkdir(parents=True, exist_ok=True)
    label = LABEL_RE.sub("_", label or reason)[:40].strip("._-") or "manual"
    name = name or f"{PREFIX}{_stamp(clock)}-{label}"
    final = root / name
    if final.exists():
        raise BackupError(f"{final} exists already")
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        contents = []
        if (paths.current_model / "config.json").is_file():
            link_tree(paths.current_model, tmp / "current_model")
            contents.append("current_model")
        if paths.config_file.is_file():
            shutil.copy2(paths.config_file, tmp / "config.json")
            contents.append("config.json")
        lineage = read_json(paths.current_model / "lineage.json") or {}
        atomic_write_json(tmp / MANIFEST, {"name": name, "reason": reason, "created_at": utc_now_iso(clock),
                                           "contents": contents, "global_step": lineage.get("global_step"),
                                           "job_id": lineage.get("job_id")})
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_backups(paths: Paths, root: Path | None = None) -> list[dict]:
    """Complete backups, newest first."""
    root = root or paths.backups
    out = []
    if root.is_dir():
        for d in root.iterdir():
            doc = read_json(d / MANIFEST) if d.is_dir() and not d.name.startswith(".") else None
            if isinstance(doc, dict):
                out.append({**doc, "name": d.name, "path": str(d)})
    return sorted(out, key=lambda b: (b.get("created_at") or "", b["name"]), reverse=True)


def replace_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` a hard-linked copy of ``src``: staged beside it, then swapped by rename (the old
    one is renamed aside and removed only after the new one is in place)."""
    staging = dst.parent / f".{dst.name}.restore-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    link_tree(src, staging)
    replace_dir(staging, dst, dst.parent / f".{dst.name}.replaced-{os.getpid()}")


def restore_backup(paths: Paths, name: str, *, model: bool = True, config: bool = True,
                   root: Path | None = None, clock: Callable[[], float] = time.time) -> dict:
    """Put a backup's current_model and/or config.json back (backing up the present ones first)."""
    root = root or paths.backups
    folder = root / name
    if name.startswith(".") or "/" in name or not (folder / MANIFEST).is_file():
        raise BackupError(f"no backup named {name!r} in {root} (see `trainctl backup list`)")
    before = create_backup(paths, f"before restoring {name}", label="pre-restore", clock=clock)
    restored = []
    if model and (folder / "current_model" / "config.json").is_file():
        replace_tree(folder / "current_model", paths.current_model)
        restored.append("current_model")
    if config and (folder / "config.json").is_file():
        tmp = paths.config_file.with_name(f".config.json.restore-{os.getpid()}")
        shutil.copy2(folder / "config.json", tmp)
        os.replace(tmp, paths.config_file)
        restored.append("config.json")
    return {"restored": restored, "from": str(folder), "previous_saved_as": str(before)}


def prune_backups(paths: Paths, keep: int, *, root: Path | None = None) -> list[str]:
    """Keep the newest ``keep`` backups; older ones are removed (renamed aside first)."""
    gone = []
    for b in list_backups(paths, root)[keep:]:
        remove_tree(b["path"])
        gone.append(b["name"])
    return gone


# ---------------------------------------------------------------------- CLI
_base = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                     help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")


@click.group("backup")
def backup_group() -> None:
    """Backups of current_model and config.json (backups/backup-*)."""


@backup_group.command("create")
@_base
@click.option("--reason", default="manual", show_default=True, help="Why (kept in backup.json).")
def create_command(base_dir: str | None, reason: str) -> None:
    """Back up current_model and config.json now."""
    click.echo(create_backup(Paths.from_base(base_dir), reason))


@backup_group.command("list")
@_base
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(base_dir: str | None, as_json: bool) -> None:
    """List backups, newest first."""
    rows = list_backups(Paths.from_base(base_dir))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for b in rows:
        click.echo(f"{b['name']}  step={b.get('global_step')}  {', '.join(b.get('contents', []))}  ({b.get('reason')})")


@backup_group.command("restore")
@_base
@click.argument("name")
@click.option("--model-only", is_flag=True, help="Restore current_model only.")
@click.option("--config-only", is_flag=True, help="Restore config.json only.")
def restore_command(base_dir: str | None, name: str, model_only: bool, config_only: bool) -> None:
    """Restore backup NAME (the present model and config are backed up first)."""
    if model_only and config_only:
        raise click.UsageError("--model-only and --config-only exclude each other")
    try:
        out = restore_backup(Paths.from_base(base_dir), name, model=not config_only, config=not model_only)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(out, indent=2))
