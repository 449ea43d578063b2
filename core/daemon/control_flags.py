"""Control flag files in ``control/``: ``.pause``, ``.resume``, ``.stop``, ``.skip``.

Each holds ``{"reason": ..., "created_at": ...}`` (written atomically; a flag made by hand with
``touch`` is accepted too, with an empty reason). Semantics, owned by the training daemon:

- ``.pause`` is a *level*: while it exists the daemon trains nothing (a running job checkpoints at
  the next optimizer step, then waits). It survives daemon restarts.
- ``.resume`` is an *edge*: the daemon removes it and ``.pause`` together. ``trainctl resume``
  writes ``.resume`` and removes ``.pause`` itself, so resuming also works while the daemon is down.
- ``.stop`` is an edge: checkpoint at the next step boundary, put the file back at the head of its
  queue, and the daemon exits 0 (same as SIGTERM). Consumed when acted on.
- ``.skip`` is an edge: the current file goes to ``queue/failed/`` with reason ``skipped`` and the
  flag's reason. Consumed when acted on (ignored, with a log line, when nothing is training).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from foundation.atomic_io import atomic_write_json
from foundation.paths import Paths
from foundation.status_io import utc_now_iso

FLAGS = ("pause", "resume", "stop", "skip")


def flag_path(paths: Paths, name: str) -> Path:
    if name not in FLAGS:
        raise ValueError(f"unknown control flag {name!r}; expected one of {', '.join(FLAGS)}")
    return paths.control / f".{name}"


def write_flag(paths: Paths, name: str, reason: str = "", *, by: str = "training_controller") -> dict:
    doc = {"reason": reason or "", "created_at": utc_now_iso(), "by": by, "pid": os.getpid()}
    atomic_write_json(flag_path(paths, name), doc)
    return doc


def read_flag(paths: Paths, name: str) -> dict | None:
    """The flag's content, or None when the flag is not set. Unparsable content still counts as
    set (a person may ``echo urgent > control/.pause``): the text becomes the reason."""
    p = flag_path(paths, name)
    try:
        raw = p.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        st = p.stat()
        mtime = st.st_mtime
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        if not isinstance(doc, dict):
            doc = {"reason": str(doc)}
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = {"reason": raw.decode("utf-8", "replace").strip()[:500]}
    doc.setdefault("reason", "")
    doc["_mtime"] = mtime
    return doc


def clear_flag(paths: Paths, name: str) -> bool:
    try:
        flag_path(paths, name).unlink()
        return True
    except FileNotFoundError:
        return False


def active_flags(paths: Paths) -> dict[str, dict]:
    out = {}
    for n in FLAGS:
        doc = read_flag(paths, n)
        if doc is not None:
            out[n] = doc
    return out
