"""Deployment orchestrator: keeps the best eligible checkpoint serving, and rolls back a bad one.

Every ``deployment.interval`` seconds, and within ``deployment.poll_interval`` of a change to
``status/model_comparisons.json``, ``status/regression_monitoring.json`` or (strategy ``newest``) the
checkpoint folders, it:

1. picks the target (``candidates``): walking the ranking best-first (strategy ``best_ranked``) or
   the newest complete checkpoint (strategy ``newest``), skipping checkpoints the regression monitor
   flags, incomplete ones, and ones that already failed a deployment;
2. if the target is not what ``models/deployed/current`` names, copies its model files into
   ``models/deployed/<version>/`` (``versions``: temp folder + rename, never half-written), with
   ``deployment.transport`` "http" pushes them to the server's own models/deployed/ (``transport``), calls
   ``POST /models/reload``, checks ``/models/info`` reports the version and global step, and runs a
   smoke completion (``deployer``);
3. on success points ``models/deployed/current`` at the version (atomic write); on any failure
   reloads the version that was serving before and records why.

It writes ``status/deployment_status.json`` (history newest first), ``status/deployment_history.json``
and ``status/last_deployment.json`` (``status_files``). The CLI is ``monitoring.deployment.cli``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from foundation.logs import enable_stack_dumps
from foundation.deployed_versions import BASE_VERSION, VersionError
from foundation.locking import FileMutex
from foundation.paths import Paths
from foundation.status_io import utc_now_iso
from monitoring.deployment.candidates import Candidate, CandidatePolicy, file_signature
from monitoring.deployment.deployer import UNREACHABLE, Deployer, VerificationError
from monitoring.deployment.status_files import StatusFiles
from monitoring.deployment.transport import make_transport
from monitoring.deployment.versions import BlockList, VersionStore, version_name
from monitoring.prediction_client import PredictionError

log = logging.getLogger("deployment_orchestrator")


class RollbackError(RuntimeError):
    """A manual rollback cannot start (nothing to roll back to, or an unknown version)."""


class DeploymentOrchestrator:
    def __init__(self, base_dir: str | os.PathLike | None = None, *, config: Any = None, client: Any = None,
                 clock: Callable[[], float] = time.time):
        from trainer.config.loader import load_config
        self.paths = Paths.from_base(base_dir)
        self.config = config or load_config(base_dir=self.paths.base)
        self.dcfg = self.config.deployment
        if client is None:
            from monitoring.prediction_client import PredictionClient
            client = PredictionClient.from_config(self.paths.base)
        self.client = client
        self.clock = clock
        self.store = VersionStore(self.paths, self.config.inference.model_dir, clock)
        self.policy = CandidatePolicy(self.paths, self.dcfg.strategy)
        self.deployer = Deployer(client, self.store, self.dcfg, transport=make_transport(self.dcfg, client))
        self.status = StatusFiles(self.paths, clock)
        self.blocked = BlockList(self.store.root / "blocked.json", clock)
        # One deployment (and one status-file update) at a time, across processes: the daemon and a
        # person running ``once`` / ``rollback``. Re-entrant within this object (per thread). The
        # timeout outlasts a deployment's reload + smoke + rollback, each bounded by request_timeout.
        self._lock = FileMutex(self.store.root / ".deploy.lock", timeout=max(600.0, 4 * self.dcfg.request_timeout))
        self.daemon_mode = False   # True inside run(): only the daemon stamps pid/heartbeat_at
        self.state = "idle"
        self.last_check: dict = {}

    # -------------------------------------------------------------- status + history
    @property
    def history(self) -> list[dict]:
        return self.status.history()

    def _payload(self, deploying: dict | None) -> dict:
        current = self.store.current()
        cinfo = self.store.info(current)
        return {"state": self.state, "strategy": self.dcfg.strategy, "transport": self.dcfg.transport,
                "server_url": self.client.base_url,
                "current_version": current, "current_checkpoint": cinfo.get("checkpoint"),
                "current_global_step": cinfo.get("global_step"), "deploying": deploying,
                "last_check": self.last_check, "failed_checkpoints": self.blocked.read()}

    def write_status(self, deploying: dict | None = None) -> None:
        with self._lock:
            self.status.write(self._payload(deploying), daemon=self.daemon_mode)

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.status.record(entry, self._payload(None), daemon=self.daemon_mode)

    def unblock(self, rel: str | None = None) -> list[str]:
        """Allow a blocked checkpoint (``rel``, or all of them) to be deployed again."""
        with self._lock:
            gone = self.blocked.unblock(rel)
            self.write_status()
            return gone

    # -------------------------------------------------------------- the decision
    def check_once(self, reason: str = "manual") -> dict:
        """One deployment check; returns what happened (also recorded in the status file)."""
        with self._lock:
            now = utc_now_iso(self.clock)
            target, skipped = self.policy.choose(self.blocked.read())
            current = self.store.current()
            current_ckpt = self.store.info(current).get("checkpoint")
            if target is None:
                result = {"action": "none", "reason": "no eligible checkpoint", "skipped": skipped[:20]}
            elif target.rel == current_ckpt:
                served = self.deployer.served_version()
                if served is UNREACHABLE or served == current:
                    result = {"action": "none", "reason": f"{target.rel} is already deployed as {current}",
                              "skipped": skipped[:20]}
                else:
                    # models/deployed/current is the source of truth: a restarted server that could
                    # not load it (or serves something else) is brought back to it
                    entry = self.deploy(target, trigger=f"resync:{reason}")
                    result = {"action": "resync", "reason": f"the server served {served!r}, current is {current!r}",
                              "entry": entry, "skipped": skipped[:20]}
            else:
                try:
                    reachable = self.client.is_reachable()
                except PredictionError:
                    reachable = False
                if not reachable:
                    result = {"action": "wait", "reason": f"inference server {self.client.base_url} is not reachable; "
                                                          f"will deploy {target.rel} when it is", "skipped": skipped[:20]}
                else:
                    entry = self.deploy(target, trigger=reason)
                    result = {"action": "deploy", "entry": entry, "skipped": skipped[:20]}
            self.last_check = {"at": now, "trigger": reason, **{k: v for k, v in result.items() if k != "entry"}}
            self.write_status()
            return result

    def deploy(self, c: Candidate, trigger: str = "manual") -> dict:
        """Deploy one candidate (rolling back on failure); returns its history entry."""
        with self._lock:
            self.state = "deploying"
            version = version_name(c.global_step, c.job_id)
            started = time.monotonic()
            entry: dict = {"version": version, "checkpoint": c.rel, "global_step": c.global_step, "score": c.score,
                           "job_id": c.job_id, "trigger": trigger, "started_at": utc_now_iso(self.clock),
                           "finished_at": None, "outcome": None, "error": None, "previous_version": None,
                           "rolled_back_to": None, "seconds": None}
            self.write_status(deploying=entry)
            self.deployer.push(c, version, entry,
                               on_failure=lambda error: self.blocked.block(c.rel, c.signature, error, version))
            entry["finished_at"] = utc_now_iso(self.clock)
            entry["seconds"] = round(time.monotonic() - started, 3)
            self.state = "idle"
            self._record(entry)
        log.info("deployment of %s (%s): %s %s", c.rel, version, entry["outcome"], entry["error"] or "")
        return entry

    def rollback(self, to: str | None = None) -> dict:
        """Serve an earlier version again (a person's decision; ``to`` defaults to the previous one).
        Raises RollbackError when there is nothing to roll back to or ``to`` is not deployed."""
        with self._lock:
            current = self.store.current()
            if to is None:
                for h in self.history:
                    v = h.get("version")
                    if h.get("outcome") in ("deployed", "manual_rollback") and v and v != current \
                            and self.store.has(v):
                        to = v
                        break
            if to is None:
                raise RollbackError("no earlier deployed version to roll back to (see `deploy list`)")
            if to != BASE_VERSION:
                try:
                    self.store.resolve(to)
                except VersionError as e:
                    raise RollbackError(e.message) from None
            info = self.store.info(to)
            entry = {"version": to, "checkpoint": info.get("checkpoint"), "global_step": info.get("global_step"),
                     "score": info.get("score"), "trigger": "manual", "started_at": utc_now_iso(self.clock),
                     "previous_version": current, "outcome": None, "error": None}
            try:
                self.deployer.switch(to, info.get("global_step") if to != BASE_VERSION else None)
                if to != BASE_VERSION:
                    self.deployer.make_current(to)
                entry["outcome"] = "manual_rollback"
                # keep the daemon from redeploying what a person just rolled back
                bad = self.store.info(current)
                if bad.get("checkpoint"):
                    self.blocked.block(bad["checkpoint"], bad.get("signature") or "", f"rolled back by hand to {to}",
                                       current)
            except (PredictionError, VerificationError) as e:
                entry["outcome"] = "failed"
                entry["error"] = f"{type(e).__name__}: {e}"
            entry["finished_at"] = utc_now_iso(self.clock)
            self._record(entry)
            return entry

    # -------------------------------------------------------------- the daemon loop
    def watch_signature(self) -> tuple:
        """Changes whenever an input of the decision changes (polled: cheap stat() calls)."""
        sig: list = [file_signature(self.paths.status_file("model_comparisons")),
                     file_signature(self.paths.status_file("regression_monitoring")),
                     file_signature(self.blocked.path)]
        if self.dcfg.strategy == "newest":
            sig.append(self.policy.watched_checkpoint_files())
        return tuple(sig)

    def run(self, stop_event: threading.Event, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        """The daemon loop: check on every change (polled) and every ``interval`` seconds."""
        enable_stack_dumps()
        self.daemon_mode = True
        last_sig: tuple | None = None
        next_check = 0.0
        next_beat = 0.0
        while not stop_event.is_set():
            now = monotonic()
            try:
                sig = self.watch_signature()
                if sig != last_sig or now >= next_check:
                    trigger = "interval" if sig == last_sig else ("start" if last_sig is None else "change")
                    last_sig = sig
                    self.check_once(trigger)
                    next_check = monotonic() + self.dcfg.interval
                    next_beat = monotonic() + self.config.monitoring.status_interval
                elif now >= next_beat:
                    self.write_status()
                    next_beat = now + self.config.monitoring.status_interval
            except Exception:  # noqa: BLE001 - a daemon loop survives a bad cycle and says so
                log.exception("deployment check failed")
                self.last_check = {"at": utc_now_iso(self.clock), "action": "error",
                                   "reason": "unexpected error (see logs/deployment_orchestrator.log)"}
                next_check = monotonic() + self.dcfg.interval
            stop_event.wait(self.dcfg.poll_interval)
        self.state = "stopped"
        self.write_status()
