"""Putting a version on the inference server over HTTP: reload, verify, and roll back on failure.

``push`` stages a checkpoint as a new version (and, with transport "http", uploads it to the
server, see ``transport``), asks the server to ``POST /models/reload`` it,
checks that ``/models/info`` reports the version and global step and that a smoke completion
succeeds, and only then points ``models/deployed/current`` at it. On any failure it reloads the
version that was serving before. ``switch`` serves an existing version (a person's rollback).
"""
from __future__ import annotations

from typing import Any, Callable

from monitoring.deployment.candidates import Candidate
from monitoring.deployment.transport import LocalTransport
from monitoring.deployment.versions import VersionStore
from monitoring.prediction_client import PredictionError, ServerUnreachable

# served_version()'s answer when the server does not answer at all (None means "serves no model")
UNREACHABLE = object()


class VerificationError(RuntimeError):
    """The new version loaded but is not what /models/info reports, or its smoke completion failed."""


class Deployer:
    def __init__(self, client: Any, store: VersionStore, dcfg: Any, transport: Any = None):
        self.client = client
        self.store = store
        self.dcfg = dcfg
        self.transport = transport or LocalTransport()

    def served_version(self) -> Any:
        """The version the server serves; None when it has no model; UNREACHABLE when it does not answer."""
        try:
            return self.client.info().get("version")
        except ServerUnreachable:
            return UNREACHABLE
        except PredictionError as e:
            return None if e.status == 503 else UNREACHABLE

    def verify(self, version: str, global_step: int | None) -> None:
        """``/models/info`` must report the version (and step), and a smoke completion must succeed."""
        info = self.client.info()
        if info.get("version") != version:
            raise VerificationError(f"/models/info reports version {info.get('version')!r}, expected {version!r}")
        if global_step is not None and info.get("global_step") != global_step:
            raise VerificationError(f"/models/info reports global_step {info.get('global_step')!r}, "
                                    f"expected {global_step}")
        r = self.client.chat(self.dcfg.smoke_prompt, max_tokens=self.dcfg.smoke_max_tokens, temperature=0.0,
                             timeout=self.dcfg.request_timeout)
        if r.finish_reason not in ("stop", "length") or not isinstance(r.text, str):
            raise VerificationError(f"smoke completion ended with {r.finish_reason!r}")
        if r.version not in (None, version):
            raise VerificationError(f"smoke completion was answered by version {r.version!r}, expected {version!r}")

    def push(self, c: Candidate, version: str, entry: dict, on_failure: Callable[[str], None]) -> None:
        """Deploy ``c`` as ``version``, filling in ``entry`` (previous_version, outcome, error,
        rolled_back_to, pruned). ``on_failure(error)`` runs before the rollback is attempted, so a
        failed checkpoint is blocked even if the rollback then goes wrong too."""
        previous = None
        try:
            try:
                previous = self.client.info().get("version")
            except PredictionError:
                previous = self.store.current()
            entry["previous_version"] = previous
            folder = self.store.stage(c, version)
            try:
                upload = self.transport.publish(version, folder)
            except ServerUnreachable as e:
                # The network, not the checkpoint: no block, nothing changed on the server, and the
                # server keeps the partial upload so that the next check continues it.
                entry["error"] = f"upload interrupted: {e}"
                entry["outcome"] = "failed"
                if version not in (previous, self.store.current()):
                    self.store.remove(version)
                return
            if upload is not None:
                entry["upload"] = upload
            self.client.reload(version, timeout=self.dcfg.request_timeout)
            self.verify(version, c.global_step)
            self.transport.make_current(version)  # the server's own pointer, for its restarts
        except (PredictionError, VerificationError, OSError, RuntimeError) as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["outcome"] = "failed"
            on_failure(entry["error"])
            if previous and previous != version:
                try:
                    self.client.reload(previous, timeout=self.dcfg.request_timeout)
                    info = self.client.info()
                    if info.get("version") != previous:
                        raise VerificationError(f"after rollback /models/info reports {info.get('version')!r}")
                    entry["outcome"] = "rolled_back"
                    entry["rolled_back_to"] = previous
                except (PredictionError, VerificationError) as e2:
                    entry["error"] += f"; rollback to {previous!r} failed too: {e2}"
            if previous != version:
                self.store.remove(version)
                self.transport.remove(version)
        else:
            self.store.set_current(version)
            entry["outcome"] = "deployed"
            keep = {version} | ({previous} if previous else set())
            entry["pruned"] = self.store.prune(keep, self.dcfg.keep_versions)
            for gone in entry["pruned"]:
                self.transport.remove(gone)

    def switch(self, version: str, global_step: int | None) -> None:
        """Serve an existing version and verify it; raises PredictionError / VerificationError."""
        self.client.reload(version, timeout=self.dcfg.request_timeout)
        self.verify(version, global_step)

    def make_current(self, version: str) -> None:
        """Point ``current`` at ``version`` on the server's side (transport "http") and on ours."""
        self.transport.make_current(version)
        self.store.set_current(version)
