"""The orchestrator's status files.

* ``status/deployment_status.json``: state, strategy, current version, last check, blocked
  checkpoints and ``history`` (newest first, at most HISTORY_LIMIT entries);
* ``status/deployment_history.json``: the same history alone, a JSON array newest first, rewritten
  whenever the history changes (``jq '.[0]' status/deployment_history.json`` is the last deployment);
* ``status/last_deployment.json``: the last history entry.

The history is shared by the daemon and the CLI (``once``, ``rollback``), so it is always re-read
from the file rather than cached; callers hold the deploy lock around a read-modify-write.
"""
from __future__ import annotations

from typing import Any, Callable

from foundation.atomic_io import atomic_write_json
from foundation.paths import Paths
from foundation.status_io import read_status, write_status

HISTORY_LIMIT = 50


class StatusFiles:
    def __init__(self, paths: Paths, clock: Callable[[], float]):
        self.clock = clock
        self.status_path = paths.status_file("deployment_status")
        self.last_path = paths.status_file("last_deployment")
        self.history_path = paths.status_file("deployment_history")

    def history(self) -> list[dict]:
        """Deployment history, newest first, as persisted in the status file."""
        doc = read_status(self.status_path) or {}
        return list(doc.get("history") or [])[:HISTORY_LIMIT]

    def write(self, payload: dict[str, Any], *, daemon: bool, history: list[dict] | None = None) -> None:
        """Write deployment_status.json: ``payload`` plus ``history`` (kept from the file when None).
        Only the daemon stamps pid/heartbeat_at; a CLI run keeps the daemon's as they are."""
        prev = read_status(self.status_path) or {}
        hist = history if history is not None else list(prev.get("history") or [])[:HISTORY_LIMIT]
        doc = {**payload, "history": hist}
        if not daemon:
            for key in ("pid", "heartbeat_at"):
                if key in prev:
                    doc[key] = prev[key]
        write_status(self.status_path, doc, daemon=daemon, clock=self.clock)
        if history is not None or not self.history_path.exists():
            atomic_write_json(self.history_path, hist)

    def record(self, entry: dict, payload: dict[str, Any], *, daemon: bool) -> None:
        """Put ``entry`` at the head of the history (and in last_deployment.json)."""
        history = [entry, *self.history()][:HISTORY_LIMIT]
        write_status(self.last_path, entry, daemon=False, clock=self.clock)
        self.write(payload, daemon=daemon, history=history)
