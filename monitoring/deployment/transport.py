"""How a staged version reaches the inference server (``deployment.transport``).

``local``: the server reads this base dir's ``models/deployed/`` (same machine, or a shared file
system), so staging the version is all it takes.

``http``: the server is on another machine with its own ``models/deployed/``. The staged folder's
files are pushed over the server's admin upload endpoints (``inference.uploads``): streamed, resumed
where the server says an earlier try stopped, then committed with a manifest of sha256s that the
server checks before the version becomes loadable. The server's ``current`` pointer and pruning
follow this side's, so a restarted server comes back on the deployed version.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from foundation.model_files import model_files
from monitoring.prediction_client import PredictionError, ServerUnreachable

log = logging.getLogger("deployment_orchestrator")

RETRY_STATUSES = (409, 422)  # offset mismatch / busy / incomplete, checksum mismatch: a new try fixes them


def manifest(folder: Path) -> dict[str, dict]:
    """{file name: {"sha256", "size"}} of the model files in ``folder``."""
    out = {}
    for f in model_files(folder):
        with open(f, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        out[f.name] = {"sha256": digest, "size": f.stat().st_size}
    return out


class LocalTransport:
    """The server shares this base dir's models/deployed/: nothing to send."""

    name = "local"

    def publish(self, version: str, folder: Path) -> dict | None:
        return None

    def make_current(self, version: str) -> None:
        pass

    def remove(self, version: str) -> None:
        pass


class HttpTransport:
    """Pushes versions to a server on another machine through its admin upload endpoints."""

    name = "http"

    def __init__(self, client: Any, *, attempts: int = 3, timeout: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.attempts = attempts
        self.timeout = timeout
        self.sleep = sleep

    def publish(self, version: str, folder: Path) -> dict:
        """Upload ``folder``'s model files as ``version`` and commit them; returns what was sent.
        Raises PredictionError once ``attempts`` tries have not finished it."""
        files = manifest(folder)
        total = sum(m["size"] for m in files.values())
        sent = resumed = 0
        for attempt in range(1, self.attempts + 1):
            try:
                state = self.client.upload_status(version)
                if state.get("deployed") == files:
                    return {"transport": "http", "bytes": total, "bytes_sent": sent, "bytes_resumed": resumed,
                            "already_on_server": True, "attempts": attempt}
                have = state.get("incoming") or {}
                for name, meta in files.items():
                    offset = have.get(name)
                    if offset == meta["size"]:
                        continue
                    if offset is None or offset > meta["size"]:
                        offset = 0  # nothing usable received: start the file over
                    resumed += offset
                    self.client.upload_file(version, name, folder / name, offset=offset, timeout=self.timeout)
                    sent += meta["size"] - offset
                self.client.commit_upload(version, files, timeout=self.timeout)
                return {"transport": "http", "bytes": total, "bytes_sent": sent, "bytes_resumed": resumed,
                        "already_on_server": False, "attempts": attempt}
            except PredictionError as e:
                retry = isinstance(e, ServerUnreachable) or e.status in RETRY_STATUSES
                if not retry or attempt == self.attempts:
                    raise
                log.warning("upload of %s, try %d of %d: %s; continuing where the server stopped",
                            version, attempt, self.attempts, e)
                self.sleep(min(2.0 ** attempt, 30.0))  # back-off before asking the server again
        raise AssertionError("unreachable")

    def make_current(self, version: str) -> None:
        self.client.set_current(version)

    def remove(self, version: str) -> None:
        """Drop a version from the server too (best effort: one it still serves stays)."""
        try:
            self.client.delete_version(version)
        except PredictionError as e:
            log.warning("could not remove version %s from the server: %s", version, e)


def make_transport(dcfg: Any, client: Any) -> LocalTransport | HttpTransport:
    if dcfg.transport == "http":
        return HttpTransport(client, attempts=dcfg.upload_attempts, timeout=dcfg.request_timeout)
    return LocalTransport()
