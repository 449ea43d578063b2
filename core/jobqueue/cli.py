#!/usr/bin/env python3
"""The training queue from the command line.

    python3 core/training_queue.py add FILE [--priority high|normal|low] [--json]
    python3 core/training_queue.py list [--json]
    python3 core/training_queue.py status [--json]
    python3 core/training_queue.py remove NAME [--json]
    python3 core/training_queue.py set-priority NAME PRIORITY [--json]
    python3 core/training_queue.py retry NAME [--priority P] [--json]
    trainctl queue ...                                   # the same commands

``add`` validates first (the same checks as the daemon's inbox), then copies the file into
``queue/<priority>/`` under a dot-temp name and renames it, so the daemon never sees half a file.
``remove`` never deletes: the file moves to ``queue/failed/`` with reason ``removed`` (``retry``
brings it back). Exit status 1 with a message naming the file on any refusal.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import os
import stat
import sys
from pathlib import Path

import click

from foundation.paths import PRIORITIES, QUEUE_LEVELS, Paths
from core.jobqueue.fs import copy_in_atomically
from core.jobqueue.store import ALL_FOLDERS, QueueStore, sidecar_name
from foundation.atomic_io import read_json


def _ctx(base_dir: str | None) -> tuple[Paths, QueueStore]:
    paths = Paths.from_base(base_dir).ensure()
    return paths, QueueStore(paths)


def _out(as_json: bool, doc, text: str) -> None:
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else text)


def _fail(as_json: bool, message: str, **extra) -> None:
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message, **extra}, indent=2, default=str))
    else:
        click.echo(f"error: {message}", err=True)
        for e in extra.get("errors", [])[:20]:
            click.echo(f"  line {e.get('line')}: {e.get('field') or '<line>'}: {e.get('reason')}: {e.get('message')}",
                       err=True)
    sys.exit(1)


def _common(f):
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    f = click.option("--base-dir", default=None, help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")(f)
    return f


def _safe_name(name: str, as_json: bool) -> str:
    if not name or "/" in name or name in (".", "..") or name.startswith(".") or "\0" in name:
        _fail(as_json, f"{name!r} is not a queue file name (give the bare file name, e.g. data.jsonl)")
    return name


@click.group("queue", context_settings={"help_option_names": ["-h", "--help"]})
def queue_group() -> None:
    """Add, list, reprioritise, remove and retry training files."""


@queue_group.command("add")
@click.argument("file", type=click.Path(dir_okay=True, exists=False))
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@_common
def add_command(file: str, priority: str, base_dir: str | None, as_json: bool) -> None:
    """Validate FILE, then copy it into queue/<priority>/ atomically."""
    from core.jobqueue.validation import check_input
    from trainer.config.loader import ConfigError, load_config
    paths, store = _ctx(base_dir)
    src = Path(file)
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        _fail(as_json, f"{file}: no such file")
    from foundation.paths import is_within
    if is_within(paths.inbox, src) or is_within(paths.queue, src):
        _fail(as_json, f"{file}: already in the daemon's inbox/ or queue/ (it is picked up from there); "
                       f"`queue add` takes files from elsewhere")
    if stat.S_ISLNK(st.st_mode):
        # A link the user names explicitly is resolved (unlike a link dropped in the inbox):
        # we copy its current content, so nothing depends on the target afterwards.
        src = src.resolve()
    try:
        cfg = load_config(base_dir=paths.base)
    except ConfigError as e:
        _fail(as_json, str(e))
    verdict = check_input(src, paths, cfg)
    if not verdict.ok:
        _fail(as_json, verdict.message, reason=verdict.reason, errors=verdict.errors)
    dst = copy_in_atomically(src, store.folder(priority), src.name, taken=store.name_taken)
    store.new_record(dst.name, priority, "queue add", src.name,
                      {"validation": {"n_examples": verdict.n_examples}, "added_from": str(Path(file).absolute())})
    _out(as_json, {"ok": True, "name": dst.name, "priority": priority, "path": str(dst),
                   "n_examples": verdict.n_examples},
         f"queued {src.name} as queue/{priority}/{dst.name} ({verdict.n_examples} examples)")


@queue_group.command("list")
@_common
def list_command(base_dir: str | None, as_json: bool) -> None:
    """Every file in every queue folder, in training order."""
    paths, store = _ctx(base_dir)
    doc = {}
    for folder in ("processing", *QUEUE_LEVELS, "failed", "recently_completed"):
        items = []
        for e in store.entries(folder):
            d = e.to_dict()
            side = {"failed": "error", "recently_completed": "result"}.get(folder)
            if side:
                info = read_json(store.folder(folder) / sidecar_name(e.name, side)) or {}
                d["reason"] = info.get("reason")
                d["message"] = info.get("message")
                d["global_step_end"] = info.get("global_step_end")
            items.append(d)
        doc[folder] = items
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    for folder, items in doc.items():
        click.echo(f"{folder} ({len(items)})")
        for d in items:
            extra = ""
            if folder == "failed":
                extra = f"  [{d.get('reason')}] {d.get('message') or ''}"[:160]
            elif folder == "recently_completed":
                extra = f"  global step {d.get('global_step_end')}"
            elif d.get("resumable"):
                extra = "  (resumes from its checkpoint)"
            click.echo(f"  {d['name']}  {d['size']} B{extra}")


@queue_group.command("status")
@_common
def status_command(base_dir: str | None, as_json: bool) -> None:
    """Counts per queue folder."""
    paths, store = _ctx(base_dir)
    counts = store.counts()
    _out(as_json, counts, ", ".join(f"{k} {counts[k]}" for k in ALL_FOLDERS))


@queue_group.command("remove")
@click.argument("name")
@_common
def remove_command(name: str, base_dir: str | None, as_json: bool) -> None:
    """Take NAME out of the queue (it moves to queue/failed/ with reason 'removed'; never deleted)."""
    paths, store = _ctx(base_dir)
    name = _safe_name(name, as_json)
    found = store.find(name, QUEUE_LEVELS)
    if found is None:
        if store.find(name, ("processing",)):
            _fail(as_json, f"{name} is being trained; use `trainctl skip` to abandon it")
        _fail(as_json, f"{name} is not waiting in any queue (high/normal/low)")
    folder, path = found
    rec = store.read_record(name)
    try:
        dst = store.fail(path, {"reason": "removed", "kind": "removed", "message": "removed from the queue by request",
                                "priority": rec.get("priority", folder), "original_name": rec.get("original_name", name),
                                "source": "queue remove"})
    except FileNotFoundError:
        _fail(as_json, f"{name} was claimed or moved meanwhile")
    store.delete_record(name)
    _out(as_json, {"ok": True, "name": name, "moved_to": str(dst)},
         f"removed {name} from queue/{folder} -> queue/failed/{dst.name}")


@queue_group.command("set-priority")
@click.argument("name")
@click.argument("priority", type=click.Choice(PRIORITIES))
@_common
def set_priority_command(name: str, priority: str, base_dir: str | None, as_json: bool) -> None:
    """Move a waiting file to another priority (it goes to the back of that queue)."""
    paths, store = _ctx(base_dir)
    name = _safe_name(name, as_json)
    try:
        dst = store.move_priority(name, priority)
    except (FileNotFoundError, ValueError) as e:
        _fail(as_json, str(e))
    _out(as_json, {"ok": True, "name": name, "priority": priority, "path": str(dst)},
         f"{name} -> queue/{priority}/")


@queue_group.command("retry")
@click.argument("name")
@click.option("--priority", type=click.Choice(PRIORITIES), default=None, help="Default: the priority it had.")
@_common
def retry_command(name: str, priority: str | None, base_dir: str | None, as_json: bool) -> None:
    """Move a failed file back to a queue (it is validated again when claimed by the engine)."""
    paths, store = _ctx(base_dir)
    name = _safe_name(name, as_json)
    try:
        dst = store.retry(name, priority)
    except (FileNotFoundError, ValueError) as e:
        _fail(as_json, str(e))
    _out(as_json, {"ok": True, "name": dst.name, "priority": dst.parent.name, "path": str(dst)},
         f"{name} -> queue/{dst.parent.name}/{dst.name}")

