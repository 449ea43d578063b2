"""The files already trained, as the data analysis compares against them.

The model_db records trained files by name (``files.source_file``) and job id, not by content,
so the comparison reads the trained files still present in ``queue/recently_completed/``
(matched to the registry through their ``.result.json``, since a file may be renamed on
arrival); the index names the trained files that are no longer there.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from trainer.data.near_dupes import NearDupIndex, example_text
from trainer.data.records import RecordError, content_key, normalize_record
from trainer.data.validator import BLANK, iter_raw_lines, parse_line


def digest(record: dict) -> int:
    """An 8-byte content digest (``content_key``): what exact duplicates are found by."""
    # surrogatepass: a lone surrogate is an anomaly to report, not a reason to crash
    key = content_key(record).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _records(path: Path, max_line_bytes: int) -> Iterable[tuple[int, dict]]:
    """(line, normalized record) of every valid line (the rest is skipped)."""
    with open(path, "rb") as f:
        for n, raw in iter_raw_lines(f, max_line_bytes):
            if raw is None:
                continue
            obj, issue = parse_line(n, raw)
            if issue is None and obj is not BLANK:
                try:
                    yield n, normalize_record(obj)
                except RecordError:
                    continue


@dataclass
class TrainedIndex:
    """Content of the trained files still on disk: exact digests and near-duplicate signatures."""

    near: NearDupIndex
    exact: dict[int, tuple[str, int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    note: str = ""

    def add_file(self, path: Path, name: str, max_line_bytes: int = 10_000_000) -> None:
        for n, rec in _records(path, max_line_bytes):
            d = digest(rec)
            if d in self.exact:
                continue
            self.exact[d] = (name, n)
            self.near.add((name, n), self.near.signature(example_text(rec)))
        self.files.append(name)

    def summary(self) -> dict:
        return {"compared_files": self.files, "missing_files": self.missing, "examples": len(self.exact),
                "near_index_full": self.near.full, "note": self.note}


def completed_results(base_dir: str | Path | None) -> dict[str, tuple[dict, Path]]:
    """Job id and original name -> (``.result.json`` document, data file) for every trained file
    still in ``queue/recently_completed/`` (the data file may have been renamed on arrival, so
    the sidecar is what links it to the model_db's job id and name)."""
    from foundation.atomic_io import read_json
    from foundation.paths import Paths
    done = Paths.from_base(base_dir).completed
    out: dict[str, tuple[dict, Path]] = {}
    for side in sorted(done.glob("*.result.json")):
        doc = read_json(side) or {}
        data = done / str(doc.get("file") or side.name[:-len(".result.json")] + ".jsonl")
        if data.is_file():
            for k in (doc.get("job_id"), doc.get("original_name")):
                if k:
                    out.setdefault(str(k), (doc, data))
    return out


def first_metadata(path: Path, max_line_bytes: int = 10_000_000) -> dict:
    """The metadata of the first valid record of ``path`` ({} when none)."""
    for _n, rec in _records(path, max_line_bytes):
        return rec.get("metadata") or {}
    return {}


def load_trained_index(base_dir: str | Path | None, *, exclude: Iterable[Path] = (),
                       near_threshold: float = 0.8, near_capacity: int = 100_000,
                       max_line_bytes: int = 10_000_000) -> TrainedIndex:
    """The trained files (model_db rows with status completed) still present in
    ``queue/recently_completed/``; without a registry, every data file there. ``exclude``: files
    being analysed (a trained file analysed again is not its own duplicate)."""
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    paths = Paths.from_base(base_dir)
    idx = TrainedIndex(near=NearDupIndex(threshold=near_threshold, capacity=near_capacity))
    skip = {Path(p).resolve() for p in exclude}
    present = {k: data for k, (_doc, data) in completed_results(paths.base).items()}
    if paths.model_db.exists():
        rows = [r for r in ModelDB(paths.model_db, base_dir=paths.base).list_files() if r["status"] == "completed"]
        idx.note = ("model_db records trained files by name only; compared with the ones still in "
                    "queue/recently_completed/")
        wanted = []
        for r in rows:
            data = present.get(str(r.get("job_id") or "")) or present.get(r["source_file"])
            if data is None:
                idx.missing.append(r["source_file"])
            else:
                wanted.append(data)
    else:
        idx.note = "no model_db: compared with every data file in queue/recently_completed/"
        wanted = sorted(p for p in paths.completed.glob("*.jsonl") if p.is_file())
    done: set[Path] = set()
    for data in wanted:
        rp = data.resolve()
        if rp in done or rp in skip:
            continue
        done.add(rp)
        idx.add_file(data, data.name, max_line_bytes)
    return idx


__all__ = ["TrainedIndex", "completed_results", "digest", "first_metadata", "load_trained_index"]
