"""Status files (``status/*.json``): the one way sidecars tell each other what they do.

Every file carries ``schema_version`` and ``updated_at`` (ISO 8601 UTC); a daemon's also
``pid`` and ``heartbeat_at``. Written atomically, so a reader never sees partial JSON.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from foundation.atomic_io import atomic_write_json, read_json
from foundation.locking import FileMutex

SCHEMA_VERSION = 1


def utc_now_iso(clock: Callable[[], float] | None = None) -> str:
    ts = clock() if clock else datetime.now(timezone.utc).timestamp()
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def write_status(path: str | os.PathLike, payload: dict[str, Any], *, daemon: bool = True,
                 clock: Callable[[], float] | None = None,
                 schema_version: int = SCHEMA_VERSION) -> dict[str, Any]:
    now = utc_now_iso(clock)
    doc = {"schema_version": schema_version, "updated_at": now}
    if daemon:
        doc["pid"] = os.getpid()
        doc["heartbeat_at"] = now
    doc.update(payload)
    atomic_write_json(Path(path), doc)
    return doc


def read_status(path: str | os.PathLike) -> dict[str, Any] | None:
    doc = read_json(path)
    return doc if isinstance(doc, dict) else None


def update_status(path: str | os.PathLike, patch: dict[str, Any], *, daemon: bool = True,
                  clock: Callable[[], float] | None = None,
                  schema_version: int = SCHEMA_VERSION, lock_timeout: float = 60.0) -> dict[str, Any]:
    """Merge ``patch`` into a status file shared by several writers (e.g. the training daemon and
    its trainer child each own some keys of training_status.json). The read-modify-write is done
    under an exclusive lock on ``<file>.lock`` so no writer loses another's keys; the write itself
    is atomic, so lock-free readers never see partial JSON. A holder stuck for ``lock_timeout``
    seconds makes this raise LockTimeout (an OSError) rather than hang the caller."""
    path = Path(path)
    with FileMutex(path.with_name(path.name + ".lock"), timeout=lock_timeout):
        doc = read_status(path) or {}
        doc.update(patch)
        now = utc_now_iso(clock)
        doc["schema_version"] = schema_version
        doc["updated_at"] = now
        if daemon:
            doc["heartbeat_at"] = now  # each writer puts its own pid key in ``patch``
        atomic_write_json(path, doc)
    return doc
