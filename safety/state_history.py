"""The system's state over time: a snapshot of what matters (each status file's key fields, queue
counts, the deployed version, model registry counts, disk), appended to ``logs/state_history.jsonl``
by ``tools/analysis/state_tracker.py --check``, which reports what changed since the last check.

Snapshot: {at, status {name: {field: value}}, programs {name: watchdog state}, queue {folder: n},
deployed_version, model_db {table: rows}, disk {free_gb, used_pct}}. Heartbeat times are not kept
(they change at every check); a process's liveness is (``alive``), from its ``pid``.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import psutil

from foundation.deployed_versions import read_current_version
from foundation.json_lines import iter_json_lines, tail_lines
from foundation.paths import PRIORITIES, Paths
from foundation.single_instance import pid_alive
from foundation.status_io import read_status, utc_now_iso

HISTORY = "state_history.jsonl"
ROTATE_BYTES = 10 * 1024 * 1024
KEY_FIELDS = ("state", "status", "paused", "pause_reason", "current_file", "job_id", "current_step",
              "lineage_global_step", "loss", "validation_loss", "val_train_gap", "evaluated_total",
              "n_pending", "current_version", "deployed_version", "version", "total", "detections_total")
GIB = 1024 ** 3


def _queue_counts(paths: Paths) -> dict[str, int]:
    out = {}
    for name in (*PRIORITIES, "processing", "failed", "recently_completed"):
        try:
            out[name] = sum(1 for n in os.listdir(paths.queue / name)
                            if not n.startswith(".") and not n.endswith((".error.json", ".result.json")))
        except FileNotFoundError:
            out[name] = 0
    try:
        out["inbox"] = sum(1 for n in os.listdir(paths.inbox) if n.endswith(".jsonl"))
    except FileNotFoundError:
        out["inbox"] = 0
    return out


def _db_counts(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    try:  # read-only: a state check must never write (or lock) the registry
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                                "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            return {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        finally:
            con.close()
    except sqlite3.Error as e:
        return {"error": str(e)}  # type: ignore[dict-item]


def snapshot(paths: Paths) -> dict[str, Any]:
    status: dict[str, dict] = {}
    for f in sorted(paths.status.glob("*.json")):
        doc = read_status(f)
        if not isinstance(doc, dict):
            status[f.stem] = {"unreadable": True}
            continue
        fields = {k: doc[k] for k in KEY_FIELDS if k in doc and not isinstance(doc[k], (dict, list))}
        if "pid" in doc:
            fields["alive"] = pid_alive(doc.get("pid"))
        status[f.stem] = fields
    supervised = (read_status(paths.status_file("watchdog")) or {}).get("programs") or {}
    programs = {n: p.get("state") for n, p in supervised.items() if isinstance(p, dict)}
    du = psutil.disk_usage(str(paths.base))
    return {"at": utc_now_iso(), "status": status, "programs": programs, "queue": _queue_counts(paths),
            "deployed_version": read_current_version(paths), "model_db": _db_counts(paths.model_db),
            "disk": {"free_gb": round(du.free / GIB, 1), "used_pct": round(du.percent)}}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changes(before: dict | None, after: dict) -> list[dict[str, Any]]:
    """[{key, before, after}] for every field that differs (``at`` aside)."""
    if before is None:
        return []
    a, b = _flat({k: v for k, v in before.items() if k != "at"}), _flat({k: v for k, v in after.items() if k != "at"})
    return [{"key": k, "before": a.get(k), "after": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def last_snapshot(paths: Paths) -> dict | None:
    docs = list(iter_json_lines(tail_lines(paths.logs / HISTORY, 1024 * 1024)))
    return docs[-1] if docs else None


def record(paths: Paths, snap: dict) -> Path:
    """Append one line (one write on O_APPEND: whole lines for readers); rotate past ROTATE_BYTES."""
    path = paths.logs / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > ROTATE_BYTES:
            os.replace(path, path.with_name(HISTORY + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(snap, separators=(",", ":"), default=str) + "\n").encode())
    finally:
        os.close(fd)
    return path


def render(prev: dict | None, snap: dict, diff: list[dict]) -> str:
    q = snap["queue"]
    lines = [f"state at {snap['at']}: queue " + ", ".join(f"{k} {v}" for k, v in q.items())
             + f"; deployed {snap['deployed_version'] or '-'}; disk {snap['disk']['free_gb']} GiB free"]
    if prev is None:
        lines.append("first check: nothing to compare with (recorded as the baseline)")
    elif not diff:
        lines.append(f"no change since the last check ({prev.get('at')})")
    else:
        lines.append(f"{len(diff)} change(s) since the last check ({prev.get('at')}):")
        lines += [f"  {c['key']}: {c['before']!r} -> {c['after']!r}" for c in diff]
    return "\n".join(lines)
