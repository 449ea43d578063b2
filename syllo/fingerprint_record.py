"""The persistent record of every puzzle a generator emitted into a base dir, so that no later batch
repeats one (whatever its seed or mix).

``data/generated/.fingerprints``: one fingerprint a line (``k:`` + sha256 of the puzzle's canonical
key, as the validation leak guard uses, so the record and the suite's fingerprints form one
exclusion set). The file is append-only: additions are written under an exclusive lock
(``<file>.lock``) and fsynced. Why not an atomic rewrite: the record grows with every batch, and
rewriting it whole each time would cost O(all items ever made); a reader that meets a torn last
line (a writer killed mid-append) ignores it, because every line is checked to be a complete
fingerprint, and a puzzle whose line was torn is at worst emitted once more.

Record *before* the batch becomes visible: a crash between the two then leaves fingerprints of
items never delivered (harmless), never delivered items without a record.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from foundation.atomic_io import fsync_dir
from foundation.locking import FileMutex

RECORD_NAME = ".fingerprints"
_LINE = re.compile(r"^k:[0-9a-f]{64}$")


class FingerprintRecord:
    """``FingerprintRecord(paths.generated / RECORD_NAME)``: ``load()``, ``add(fps)``."""

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float = 60.0):
        self.path = Path(path)
        self._lock = FileMutex(self.path.with_name(self.path.name + ".lock"), timeout=lock_timeout)

    @classmethod
    def for_base(cls, base_dir: str | os.PathLike) -> "FingerprintRecord":
        from foundation.paths import Paths
        return cls(Paths.from_base(base_dir).generated / RECORD_NAME)

    def load(self) -> set[str]:
        """Every complete fingerprint recorded (empty when there is no record yet)."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return {ln.strip() for ln in f if _LINE.match(ln.strip())}
        except FileNotFoundError:
            return set()

    def add(self, fingerprints: Iterable[str]) -> int:
        """Append the fingerprints not recorded yet; returns how many were added."""
        new = sorted({fp for fp in fingerprints if _LINE.match(fp)})
        if not new:
            return 0
        with self._lock:
            have = self.load()
            new = [fp for fp in new if fp not in have]
            if not new:
                return 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as f:
                if f.tell() and not self._ends_with_newline():
                    f.write("\n")  # a torn line from a killed writer stays on its own (ignored) line
                f.write("".join(fp + "\n" for fp in new))
                f.flush()
                os.fsync(f.fileno())
            if created:
                fsync_dir(self.path.parent)
        return len(new)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
