"""The queue folders and the per-file job records: the one place that moves data files.

Life of a file (DESIGN.md): ``inbox/x.jsonl`` -> ``queue/<priority>/x.jsonl`` -> claimed by rename
into ``queue/processing/`` -> ``queue/recently_completed/`` (+ ``x.result.json``) or
``queue/failed/`` (+ ``x.error.json``). Files are only ever renamed (never copied then deleted,
never deleted), and a name that is taken gets a ``-2``, ``-3`` ... suffix instead of overwriting.

Names are unique across the *active* folders (high/normal/low/processing), so a file name is the
key of its job record ``queue/.jobs/<name>.job.json``. The record is advisory (the folder a file
is in is the truth) and holds what must survive a crash: priority, FIFO sequence, the job id (so a
re-claimed file resumes its own checkpoints), retry counters, OOM batch overrides, and the
"finishing" phase marker that makes the success path idempotent.

Claim order: a file whose job already started (interrupted by a crash, stop or OOM) first, so the
lineage continues from its checkpoint before anything else trains; then high -> normal -> low,
FIFO within a level (by the record's ``seq``, else the file's mtime).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from foundation.atomic_io import atomic_write_json, read_json
from foundation.paths import PRIORITIES, QUEUE_LEVELS, Paths
from core.jobqueue.fs import move_unique, rename_noreplace
from foundation.status_io import utc_now_iso

DATA_EXT = ".jsonl"
WAITING = QUEUE_LEVELS  # claim order (a started job first, then by level, FIFO within one)
ACTIVE = (*QUEUE_LEVELS, "processing")
ALL_FOLDERS = (*ACTIVE, "failed", "recently_completed")
SIDECAR_SUFFIXES = (".error.json", ".result.json")
RECORD_SUFFIX = ".job.json"


def sidecar_name(name: str, kind: str) -> str:
    """``x.jsonl`` -> ``x.<kind>.json``; any other name keeps its extension (``a.txt.error.json``)
    so two quarantined files never share a sidecar."""
    base = name[: -len(DATA_EXT)] if name.endswith(DATA_EXT) else name
    return f"{base}.{kind}.json"


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_sidecar(name: str) -> bool:
    return name.endswith(SIDECAR_SUFFIXES)


@dataclass
class QueueEntry:
    name: str
    folder: str
    path: Path
    size: int
    seq: int
    record: dict

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "folder": self.folder, "path": str(self.path), "size": self.size,
                "priority": self.record.get("priority", self.folder if self.folder in QUEUE_LEVELS else None),
                "enqueued_at": self.record.get("enqueued_at"), "job_id": self.record.get("job_id"),
                "resumable": bool(self.record.get("started"))}


class QueueStore:
    def __init__(self, paths: Paths, clock: Callable[[], float] = time.time):
        self.paths = paths
        self.clock = clock
        self.jobs_dir = paths.queue / ".jobs"

    # ------------------------------------------------------------------ records
    def record_path(self, name: str) -> Path:
        return self.jobs_dir / (name + RECORD_SUFFIX)

    def read_record(self, name: str) -> dict:
        rec = read_json(self.record_path(name))
        return rec if isinstance(rec, dict) else {}

    def write_record(self, name: str, rec: dict) -> dict:
        rec = dict(rec)
        rec["name"] = name
        rec["updated_at"] = utc_now_iso(self.clock)
        atomic_write_json(self.record_path(name), rec)
        return rec

    def update_record(self, name: str, **patch: Any) -> dict:
        rec = self.read_record(name)
        rec.update(patch)
        return self.write_record(name, rec)

    def delete_record(self, name: str) -> None:
        try:
            self.record_path(name).unlink()
        except FileNotFoundError:
            pass

    def rename_record(self, old: str, new: str) -> None:
        if old == new:
            return
        rec = self.read_record(old)
        if rec:
            self.write_record(new, rec)
            self.delete_record(old)

    # ------------------------------------------------------------------ listing
    def folder(self, name: str) -> Path:
        return self.paths.queue_dir(name)

    def data_names(self, folder: str) -> list[str]:
        """Entries of a queue folder that are data files (not dotfiles/temp names/sidecars)."""
        d = self.folder(folder)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if is_hidden(n) or is_sidecar(n) or n == ".gitkeep":
                continue
            if folder in ACTIVE and not n.endswith(DATA_EXT):
                continue
            out.append(n)
        return out

    def entries(self, folder: str) -> list[QueueEntry]:
        """A folder's data files in claim order (FIFO by seq)."""
        out = []
        for n in self.data_names(folder):
            p = self.folder(folder) / n
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            rec = self.read_record(n) if folder in ACTIVE else {}
            seq = int(rec.get("seq", st.st_mtime_ns)) if rec else st.st_mtime_ns
            out.append(QueueEntry(n, folder, p, st.st_size, seq, rec))
        out.sort(key=lambda e: (e.seq, e.name))
        return out

    def counts(self) -> dict[str, int]:
        return {f: len(self.data_names(f)) for f in ALL_FOLDERS}

    def name_taken(self, name: str) -> bool:
        """A name is taken when any active folder holds it or a job record for it exists."""
        if self.record_path(name).exists():
            return True
        return any(os.path.lexists(self.folder(f) / name) for f in ACTIVE)

    def find(self, name: str, folders: Iterable[str] = ALL_FOLDERS) -> tuple[str, Path] | None:
        for f in folders:
            p = self.folder(f) / name
            if os.path.lexists(p):
                return f, p
        return None

    def next_to_claim(self) -> QueueEntry | None:
        waiting = [e for f in WAITING for e in self.entries(f)]
        if not waiting:
            return None
        rank = {p: i for i, p in enumerate(WAITING)}
        waiting.sort(key=lambda e: (0 if e.record.get("started") else 1, rank[e.folder], e.seq, e.name))
        return waiting[0]

    # ------------------------------------------------------------------ moves
    def enqueue(self, src: Path, priority: str, *, source: str, original_name: str | None = None,
                extra: dict | None = None) -> Path:
        """Move a (validated) file into ``queue/<priority>/`` by rename and create its record."""
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
        dst = move_unique(src, self.folder(priority), src.name, taken=self.name_taken)
        self.new_record(dst.name, priority, source, original_name or src.name, extra)
        return dst

    def new_record(self, name: str, priority: str, source: str, original_name: str,
                    extra: dict | None) -> dict:
        rec = {"priority": priority, "seq": time.time_ns(), "enqueued_at": utc_now_iso(self.clock),
               "source": source, "original_name": original_name, "attempts": 0, "restarts": 0,
               "oom_retries": 0, "config_overrides": {}, "phase": "queued"}
        rec.update(extra or {})
        return self.write_record(name, rec)

    def adopt(self, entry: QueueEntry) -> dict:
        """A file put into a queue folder by hand has no record yet: give it one."""
        if entry.record:
            return entry.record
        return self.new_record(entry.name, entry.folder if entry.folder in QUEUE_LEVELS else "normal",
                                "manual", entry.name, {"seq": entry.seq})

    def claim(self, entry: QueueEntry) -> Path:
        """Rename a waiting file into processing/ (FileNotFoundError when someone else moved it)."""
        rec = self.adopt(entry)
        dst = self.folder("processing") / entry.name
        rename_noreplace(entry.path, dst)
        rec = dict(rec)
        rec.update(phase="claimed", priority=rec.get("priority", entry.folder), claimed_at=utc_now_iso(self.clock))
        self.write_record(entry.name, rec)
        return dst

    def requeue(self, name: str, *, head: bool = True, priority: str | None = None) -> Path:
        """processing/NAME back to its queue (at the head: it is the next file to train)."""
        rec = self.read_record(name)
        prio = priority or rec.get("priority") or "normal"
        if prio not in QUEUE_LEVELS:
            prio = "normal"
        src = self.folder("processing") / name
        if head:
            seqs = [e.seq for e in self.entries(prio)]
            rec["seq"] = min([*seqs, time.time_ns()]) - 1
        rec["phase"] = "queued"
        rec["priority"] = prio
        self.write_record(name, rec)
        dst = self.folder(prio) / name
        rename_noreplace(src, dst)
        return dst

    def move_priority(self, name: str, new_priority: str) -> Path:
        if new_priority not in PRIORITIES:
            raise ValueError(f"unknown priority {new_priority!r}; expected one of {', '.join(PRIORITIES)}")
        found = self.find(name, WAITING)
        if found is None:
            raise FileNotFoundError(f"{name} is not waiting in any queue (high/normal/low)")
        folder, path = found
        if folder == new_priority:
            return path
        rec = self.read_record(name)
        dst = self.folder(new_priority) / name
        rename_noreplace(path, dst)
        rec.update(priority=new_priority, seq=time.time_ns())
        self.write_record(name, rec)
        return dst

    def _sidecar_taken(self, folder: str, kind: str) -> Callable[[str], bool]:
        d = self.folder(folder)
        return lambda cand: os.path.lexists(d / sidecar_name(cand, kind))

    def complete(self, src: Path, result: dict, name: str | None = None) -> Path:
        """Write ``NAME.result.json`` then rename the data file into recently_completed/."""
        dest = self.folder("recently_completed")
        name = name or self.choose_name("recently_completed", src.name, "result")
        atomic_write_json(dest / sidecar_name(name, "result"), {**result, "file": name})
        dst = dest / name
        rename_noreplace(src, dst)
        return dst

    def choose_name(self, folder: str, name: str, kind: str) -> str:
        d = self.folder(folder)
        side = self._sidecar_taken(folder, kind)
        from core.jobqueue.fs import candidate_names
        for cand in candidate_names(name):
            if not os.path.lexists(d / cand) and not side(cand):
                return cand
        raise FileExistsError(f"no free name for {name} in {d}")

    def fail(self, src: Path, error: dict) -> Path:
        """Quarantine: rename ``src`` (a file, directory or symlink) into failed/ and write
        ``NAME.error.json`` beside it. The sidecar is written after the move, under the final name."""
        dest = self.folder("failed")
        side = self._sidecar_taken("failed", "error")
        dst = move_unique(src, dest, src.name, taken=side)
        doc = {"schema_version": 1, "file": dst.name, "failed_at": utc_now_iso(self.clock), **error}
        doc.setdefault("original_name", src.name)
        atomic_write_json(dest / sidecar_name(dst.name, "error"), doc)
        return dst

    def retry(self, name: str, priority: str | None = None) -> Path:
        """failed/NAME back to a queue (its old priority unless given). The old error is kept in
        the new record's ``previous_errors``."""
        src = self.folder("failed") / name
        if not os.path.lexists(src):
            raise FileNotFoundError(f"{name} is not in queue/failed/")
        if not name.endswith(DATA_EXT) or src.is_symlink() or not src.is_file():
            raise ValueError(f"{name} is not a regular .jsonl file and cannot be retried")
        err_path = self.folder("failed") / sidecar_name(name, "error")
        err = read_json(err_path) or {}
        prio = priority or err.get("priority") or "normal"
        if prio not in QUEUE_LEVELS:
            prio = "normal"
        dst = move_unique(src, self.folder(prio), name, taken=self.name_taken)
        self.new_record(dst.name, prio, "retry", err.get("original_name", name),
                         {"previous_errors": [err] if err else []})
        try:
            err_path.unlink()
        except FileNotFoundError:
            pass
        return dst
