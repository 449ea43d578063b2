"""Reading ``logs/metrics.jsonl`` (written by ``trainer/engine/metrics_log.py``): a bounded window of
the history for a page load, and a tail that yields the lines appended since the last look (the SSE
stream's source of new steps).

The writer rotates ``metrics.jsonl`` -> ``metrics.jsonl.1`` by rename. The tail keeps the inode it
was reading; when the path names another file, it finishes the old one (now ``.1``) before
starting on the new one, so no step is lost across a rotation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from foundation.json_lines import iter_json_lines
from trainer.engine.metrics_log import FILE_NAME, rotated_paths

# The rotated files are at most metrics_log_max_mb each; the window reads from the newest
# backwards and stops once it has enough lines, so a page load costs a bounded read.
_READ_CHUNK = 1 << 20


def metrics_path(logs_dir: str | os.PathLike) -> Path:
    return Path(logs_dir) / FILE_NAME


def _lines_reversed(path: Path) -> Iterator[str]:
    """The complete lines of ``path``, last first (read in chunks from the end)."""
    try:
        f = open(path, "rb")
    except OSError:
        return
    with f:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        rest = b""
        while pos > 0:
            step = min(_READ_CHUNK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + rest
            parts = buf.split(b"\n")
            rest = parts[0]
            for line in reversed(parts[1:]):
                if line.strip():
                    yield line.decode("utf-8", "replace")
        if rest.strip():
            yield rest.decode("utf-8", "replace")


def read_window(logs_dir: str | os.PathLike, max_points: int, backups: int = 3,
                scan_limit: int = 200_000) -> list[dict]:
    """The newest points, oldest first: all of the last ``scan_limit`` lines, downsampled evenly to
    at most ``max_points`` (the newest point and every validation point are always kept)."""
    newest_first: list[dict] = []
    for path in reversed(rotated_paths(metrics_path(logs_dir), backups)):
        for rec in iter_json_lines(_lines_reversed(path)):
            if "global_step" in rec:
                newest_first.append(rec)
            if len(newest_first) >= scan_limit:
                break
        if len(newest_first) >= scan_limit:
            break
    points = newest_first[::-1]
    return downsample(points, max_points)


def downsample(points: list[dict], max_points: int) -> list[dict]:
    """At most ``max_points``: every k-th training point plus all validation points and the last one."""
    if len(points) <= max_points:
        return points
    evals = [p for p in points if p.get("validation_loss") is not None]
    budget = max(2, max_points - len(evals))
    k = -(-len(points) // budget)  # ceil
    keep = {id(p) for p in points[::-1][::k]} | {id(p) for p in evals[-max_points // 2:]}
    return [p for p in points if id(p) in keep]


class MetricsTail:
    """``poll()`` returns the records appended since the previous call (whole lines only)."""

    def __init__(self, logs_dir: str | os.PathLike, from_end: bool = True):
        self.path = metrics_path(logs_dir)
        self._ino: int | None = None
        self._pos = 0
        self._partial = b""
        if from_end:
            try:
                st = self.path.stat()
                self._ino, self._pos = st.st_ino, st.st_size
            except OSError:
                pass

    def _read_from(self, path: Path, ino: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                if ino is not None and os.fstat(f.fileno()).st_ino != ino:
                    return b""
                f.seek(self._pos)
                return f.read()
        except OSError:
            return b""

    def poll(self) -> list[dict]:
        try:
            st = self.path.stat()
        except OSError:
            return []
        data = b""
        if self._ino is not None and st.st_ino != self._ino:
            # Rotated: finish the file we were reading (now metrics.jsonl.1), then start the new one.
            data = self._read_from(self.path.with_name(self.path.name + ".1"), self._ino)
            self._pos, self._partial = 0, self._partial + data
            data = b""
        elif st.st_size < self._pos:  # truncated or replaced in place: start over
            self._pos, self._partial = 0, b""
        self._ino = st.st_ino
        data = self._read_from(self.path, st.st_ino)
        self._pos += len(data)
        buf = self._partial + data
        lines = buf.split(b"\n")
        self._partial = lines.pop()  # the unfinished last line (b"" after a newline)
        return [r for r in iter_json_lines(line.decode("utf-8", "replace") for line in lines)
                if "global_step" in r]
