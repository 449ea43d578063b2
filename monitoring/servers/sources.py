"""What one live-monitor snapshot reads: status files (each at most once) and timestamps' ages.
A source that is missing or malformed reads as None, and its panel says ``unknown``."""
from __future__ import annotations

import time
from typing import Any, Callable

from foundation.atomic_io import read_json
from foundation.paths import Paths
from foundation.status_io import parse_iso


def unknown(reason: str) -> dict:
    return {"unknown": True, "reason": reason}


class Sources:
    """What one snapshot reads, each file at most once (panels share reads)."""

    def __init__(self, paths: Paths, now: Callable[[], float] = time.time):
        self.paths = paths
        self.now = now()
        self._cache: dict[str, Any] = {}

    def status(self, name: str) -> dict | None:
        """status/<name>.json as a dict; None when missing, unreadable or not a JSON object."""
        if name not in self._cache:
            try:
                doc = read_json(self.paths.status_file(name))
            except (OSError, ValueError):
                doc = None
            self._cache[name] = doc if isinstance(doc, dict) else None
        return self._cache[name]

    def age(self, ts: Any) -> float | None:
        """Seconds since an ISO timestamp (None when absent or not a timestamp)."""
        if not isinstance(ts, str):
            return None
        try:
            return round(self.now - parse_iso(ts).timestamp(), 1)
        except ValueError:
            return None
