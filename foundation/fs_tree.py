"""Folder trees that other processes read while they change: copied cheaply, replaced and removed
so that no reader ever sees one half-written or half-deleted.

Why hard links for copies: a model folder is gigabytes; a backup, a named version or a staged
model install costs no space and no time when it shares the files' inodes. That is safe because
model files are never modified in place: every writer replaces a file (a new inode), so the
linked copy keeps the old content.

Why rename before delete: ``rmtree`` takes time and can be interrupted; renaming the folder to a
dot-name first is one atomic step, after which no reader takes it for the real thing, and a crash
mid-delete leaves only a ``.deleting-*`` folder (swept by whoever owns that folder).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from foundation.atomic_io import fsync_dir

DELETING_PREFIX = ".deleting-"


def link_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` to a new ``dst`` (which must not exist) with hard links, plain copies across
    file systems."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True)
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)


def replace_dir(new: str | os.PathLike, dst: str | os.PathLike, aside: str | os.PathLike) -> None:
    """Rename the complete folder ``new`` to ``dst``. An existing ``dst`` is renamed to ``aside``
    first and removed only once the new one is in place, so a crash leaves one of the two."""
    new, dst, aside = Path(new), Path(dst), Path(aside)
    if dst.exists():
        os.rename(dst, aside)
    os.rename(new, dst)
    fsync_dir(dst.parent)
    shutil.rmtree(aside, ignore_errors=True)


def remove_tree(folder: str | os.PathLike) -> None:
    """Delete ``folder``: renamed to ``.deleting-<name>-<pid>-<ns>`` beside it (atomic), then removed."""
    folder = Path(folder)
    trash = folder.parent / f"{DELETING_PREFIX}{folder.name}-{os.getpid()}-{time.time_ns()}"
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
