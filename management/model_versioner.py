"""Named versions of the model: ``trainctl version save NAME``, ``list``, ``restore NAME``, ``delete NAME``.

    models/versions/<NAME>/   a hard-linked copy of current_model + version.json (metadata)

A version is a model someone wants to keep by name (a release, "before the curriculum change"),
outside every automatic policy: retention and snapshots never delete one. ``version.json`` holds
the name, a note, when it was saved, the lineage (global step, job, source file) and the newest
evaluation of the checkpoint it came from when the model_db knows it. Written as a temp folder and
renamed, so a listed version is complete. ``restore`` backs up the present current_model first
(backup manager) and swaps by rename.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import click

from foundation.atomic_io import atomic_write_json, fsync_dir, read_json
from foundation.fs_tree import link_tree, remove_tree
from foundation.paths import Paths
from foundation.status_io import utc_now_iso
from management.backup_manager import create_backup, replace_tree

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
META = "version.json"


class VersionError(ValueError):
    pass


def versions_root(paths: Paths) -> Path:
    return paths.models / "versions"


def _folder(paths: Paths, name: str) -> Path:
    if not NAME_RE.match(name or ""):
        raise VersionError(f"version name {name!r}: use letters, digits, '.', '_', '-' (64 at most, "
                           "no path separators)")
    return versions_root(paths) / name


def _metrics(paths: Paths, lineage: dict) -> dict | None:
    """The newest evaluation of the checkpoint current_model came from, when registered."""
    if not paths.model_db.exists() or lineage.get("global_step") is None:
        return None
    from foundation.model_db import ModelDB
    db = ModelDB(paths.model_db, base_dir=paths.base)
    for e in reversed(db.latest_evaluations()):
        if e["global_step"] == lineage["global_step"] and (not lineage.get("job_id") or e["job_id"] == lineage["job_id"]):
            return {"checkpoint": e["checkpoint_path"], "accuracy": e["accuracy"],
                    "validation_loss": e["validation_loss"], "suite_version": e["suite_version"]}
    return None


def save_version(paths: Paths, name: str, note: str = "") -> dict:
    folder = _folder(paths, name)
    if folder.exists():
        raise VersionError(f"version {name!r} exists already (delete it first, or pick another name)")
    if not (paths.current_model / "config.json").is_file():
        raise VersionError(f"{paths.current_model} holds no model yet: nothing to save")
    lineage = read_json(paths.current_model / "lineage.json") or {}
    meta = {"name": name, "note": note, "saved_at": utc_now_iso(), "global_step": lineage.get("global_step"),
            "job_id": lineage.get("job_id"), "source_file": lineage.get("source_file"),
            "metrics": _metrics(paths, lineage)}
    root = versions_root(paths)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        link_tree(paths.current_model, tmp)
        atomic_write_json(tmp / META, meta)
        os.rename(tmp, folder)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def list_versions(paths: Paths) -> list[dict]:
    root = versions_root(paths)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            meta = read_json(d / META) if d.is_dir() and not d.name.startswith(".") else None
            if isinstance(meta, dict):
                out.append(meta)
    return sorted(out, key=lambda m: m.get("saved_at") or "", reverse=True)


def restore_version(paths: Paths, name: str) -> dict:
    folder = _folder(paths, name)
    if not (folder / META).is_file():
        raise VersionError(f"no version {name!r} (see `trainctl version list`)")
    backup = create_backup(paths, f"before restoring version {name}", label=f"pre-version-{name}")
    replace_tree(folder, paths.current_model)
    (paths.current_model / META).unlink(missing_ok=True)  # a link: the version keeps its own
    return {"restored": name, "previous_saved_as": str(backup)}


def delete_version(paths: Paths, name: str) -> None:
    folder = _folder(paths, name)
    if not (folder / META).is_file():
        raise VersionError(f"no version {name!r}")
    remove_tree(folder)


_base = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                     help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")


def _run(fn, *args):
    try:
        return fn(*args)
    except VersionError as e:
        raise click.ClickException(str(e)) from None


@click.group("version")
def version_group() -> None:
    """Named versions of current_model (models/versions/NAME/): save, list, restore, delete."""


@version_group.command("save")
@_base
@click.argument("name")
@click.option("--note", default="", help="Free text kept in version.json.")
def save_command(base_dir: str | None, name: str, note: str) -> None:
    """Save current_model as version NAME."""
    click.echo(json.dumps(_run(save_version, Paths.from_base(base_dir), name, note), indent=2))


@version_group.command("list")
@_base
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(base_dir: str | None, as_json: bool) -> None:
    """List saved versions, newest first."""
    rows = list_versions(Paths.from_base(base_dir))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for m in rows:
        acc = (m.get("metrics") or {}).get("accuracy")
        click.echo(f"{m['name']}  step={m.get('global_step')}  accuracy={acc}  saved={m.get('saved_at')}  {m.get('note', '')}")


@version_group.command("restore")
@_base
@click.argument("name")
def restore_command(base_dir: str | None, name: str) -> None:
    """Make version NAME the current model (the present one is backed up first; pause training first)."""
    click.echo(json.dumps(_run(restore_version, Paths.from_base(base_dir), name), indent=2))


@version_group.command("delete")
@_base
@click.argument("name")
def delete_command(base_dir: str | None, name: str) -> None:
    """Delete version NAME."""
    _run(delete_version, Paths.from_base(base_dir), name)
    click.echo(f"deleted version {name}")
