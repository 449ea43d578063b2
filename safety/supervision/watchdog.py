"""The watchdog: one state machine per program, a supervision pass every ``interval`` seconds,
``status/watchdog.json`` after every pass, reset requests from ``control/``, clean shutdown.

status/watchdog.json (documented in ARCHITECTURE.md, "Watchdog status"):
  schema_version, updated_at, pid, heartbeat_at, state (running | stopping | stopped),
  started_at, interval, policy {RestartPolicy fields},
  programs: {name: {state, pid, owned, restarts, consecutive_failures, failures_in_window,
                    failure_times, started_at, healthy, health, last_exit {code, signal, reason, at},
                    backoff_until, fatal_reason, last_log_lines, log_file, pid_file, command}}

Reset while the watchdog runs: ``trainctl watchdog reset NAME`` writes
``control/watchdog_reset.<NAME>.json``; the next pass clears the program's failures (a FATAL one is
started again) and removes the file. While no watchdog runs, the command edits watchdog.json itself,
and the next watchdog restores its state from it (FATAL programs stay FATAL across watchdog restarts).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from foundation.paths import Paths
from foundation.status_io import parse_iso, read_status, utc_now_iso, write_status
from safety.supervision.processes import ProcessOps, log_path, log_tail
from safety.supervision.programs import ProgramSpec
from safety.supervision.state_machine import Machine, RestartPolicy, State

log = logging.getLogger("watchdog")

STATUS_NAME = "watchdog"
INSTANCE_NAME = "watchdog"
RESET_PREFIX = "watchdog_reset."


def reset_request_path(paths: Paths, name: str) -> Path:
    return paths.control / f"{RESET_PREFIX}{name}.json"


def _iso(ts: float | None) -> str | None:
    return utc_now_iso(lambda: ts) if ts is not None else None


def _epoch(iso: Any) -> float | None:
    try:
        return parse_iso(iso).timestamp() if isinstance(iso, str) else None
    except ValueError:
        return None


class Watchdog:
    def __init__(self, base_dir: str | Path | None, programs: list[ProgramSpec], policy: RestartPolicy, *,
                 interval: float = 1.0, clock: Callable[[], float] = time.time,
                 ops: ProcessOps | None = None) -> None:
        self.paths = Paths.from_base(base_dir)
        self.policy, self.interval, self.clock = policy, interval, clock
        self.ops = ops or ProcessOps(self.paths, clock=clock)
        self.specs = {p.name: p for p in programs}
        self.started_at = utc_now_iso(clock)
        previous = (read_status(self.status_path) or {}).get("programs") or {}
        self._prior: dict[str, dict] = {}
        self.machines: dict[str, Machine] = {}
        for spec in programs:
            prior = previous.get(spec.name) if isinstance(previous.get(spec.name), dict) else {}
            self._prior[spec.name] = prior
            self.machines[spec.name] = self._machine(spec)
            try:
                self._restore(self.machines[spec.name], prior)
            except (TypeError, ValueError, AttributeError) as e:  # a hand-edited file must not stop supervision
                log.warning("%s: ignoring its unreadable history in status/watchdog.json (%s)", spec.name, e)
                self.machines[spec.name] = self._machine(spec)
        self._last_states = {n: m.state for n, m in self.machines.items()}

    @property
    def status_path(self) -> Path:
        return self.paths.status_file(STATUS_NAME)

    def _machine(self, spec: ProgramSpec) -> Machine:
        name = spec.name

        def spawn():
            h = self.ops.spawn(spec, self._prior.pop(name, None))
            log.info("%s: %s pid %s", name, "started" if h.popen else "adopted running", h.pid)
            return h

        return Machine(name, self.policy, self.clock, spawn=spawn,
                       probe=lambda h: self.ops.probe(spec, h), terminate=self.ops.terminate, kill=self.ops.kill,
                       stop_timeout=spec.stop_timeout, restart_clean_exit=spec.restart == "always",
                       log_tail=lambda: log_tail(log_path(self.paths, name)))

    def _restore(self, m: Machine, prior: dict) -> None:
        """Carry the failure history and FATAL over from the previous watchdog's status file."""
        if not prior:
            return
        now = self.clock()
        m.restarts = int(prior.get("restarts") or 0)
        m.last_exit = prior.get("last_exit") if isinstance(prior.get("last_exit"), dict) else None
        m.last_log_lines = list(prior.get("last_log_lines") or [])
        times = [t for t in map(_epoch, prior.get("failure_times") or []) if t is not None]
        m.failures = [t for t in times if now - t < self.policy.failure_window]
        m.consecutive_failures = int(prior.get("consecutive_failures") or 0)
        if prior.get("state") == State.FATAL.value:
            m.state, m.fatal_reason = State.FATAL, prior.get("fatal_reason")
        elif prior.get("state") == State.EXITED.value:
            m.state = State.EXITED
        elif prior.get("state") == State.BACKOFF.value and _epoch(prior.get("backoff_until")):
            m.state, m.backoff_until = State.BACKOFF, _epoch(prior.get("backoff_until"))

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        log.info("watchdog supervising %s (pid file .pids/%s.pid)", ", ".join(self.machines), INSTANCE_NAME)
        while not stop.is_set():
            self.supervise_once()
            stop.wait(self.interval)
        self.shutdown()

    def supervise_once(self) -> None:
        self._apply_resets()
        for name, m in self.machines.items():
            try:
                m.tick()
            except Exception:  # noqa: BLE001 - one program's trouble must not stop the supervision of the others
                log.exception("%s: supervision step failed", name)
            self._log_transition(name, m)
        self.write_status("running")

    def shutdown(self, poll: float = 0.2) -> None:
        """Stop the programs this watchdog (or its predecessor) started: SIGTERM, then SIGKILL after each
        program's stop_timeout. Adopted programs that someone else started are left running."""
        for name, m in self.machines.items():
            h = m.handle
            if h is not None and not getattr(h, "owned", True):
                log.info("%s: leaving pid %s running (not started by a watchdog)", name, h.pid)
                m.state, m.handle = State.STOPPED, None
                continue
            m.request_stop()
        waited = threading.Event()
        limit = self.clock() + max((s.stop_timeout for s in self.specs.values()), default=0) + 30
        while any(m.state == State.STOPPING for m in self.machines.values()) and self.clock() < limit:
            for name, m in self.machines.items():
                if m.state == State.STOPPING:
                    m.tick()
                    self._log_transition(name, m)
            self.write_status("stopping")
            waited.wait(poll)
        self.write_status("stopped")

    # ------------------------------------------------------------------ resets
    def _apply_resets(self) -> None:
        for req in sorted(self.paths.control.glob(f"{RESET_PREFIX}*.json")):
            name = req.name[len(RESET_PREFIX):-len(".json")]
            m = self.machines.get(name)
            if m is not None:
                was_fatal = m.reset()
                log.info("%s: reset by %s%s", name, req.name, " (was FATAL; starting again)" if was_fatal else "")
            else:
                log.warning("ignoring %s: no program %r supervised here", req.name, name)
            try:
                req.unlink()
            except FileNotFoundError:
                pass

    def _log_transition(self, name: str, m: Machine) -> None:
        before = self._last_states.get(name)
        if before == m.state:
            return
        self._last_states[name] = m.state
        extra = ""
        if m.state == State.BACKOFF:
            extra = f" after {(m.last_exit or {}).get('reason')}; restart in {(m.backoff_until or 0) - self.clock():.1f}s"
        elif m.state == State.FATAL:
            extra = f": {m.fatal_reason}; `trainctl watchdog reset {name}` to try again"
        elif m.state == State.EXITED:
            extra = f" (exit code 0: asked to stop; `trainctl watchdog reset {name}` starts it again)"
        elif m.state == State.STOPPING:
            extra = f" ({m.stop_reason}: {m.health_detail})"
        (log.error if m.state == State.FATAL else log.info)("%s: %s -> %s%s", name, before.value if before else "-",
                                                             m.state.value, extra)

    # ------------------------------------------------------------------ status file
    def program_doc(self, name: str) -> dict[str, Any]:
        m, spec = self.machines[name], self.specs[name]
        h = m.handle
        exit_ = dict(m.last_exit) if m.last_exit else None
        if exit_ and isinstance(exit_.get("at"), (int, float)):
            exit_["at"] = _iso(exit_["at"])
        return {
            "state": m.state.value, "pid": h.pid if h is not None else None,
            "owned": getattr(h, "owned", None) if h is not None else None,
            "restarts": m.restarts, "consecutive_failures": m.consecutive_failures,
            "failures_in_window": len(m.failures), "failure_times": [_iso(t) for t in m.failures],
            "started_at": _iso(m.started_at) if h is not None else None,
            "healthy": (m.healthy_since is not None) if m.state == State.RUNNING else None,
            "health": m.health_detail, "last_exit": exit_, "backoff_until": _iso(m.backoff_until),
            "fatal_reason": m.fatal_reason, "last_log_lines": m.last_log_lines,
            "log_file": str(log_path(self.paths, name)),
            "pid_file": str(self.paths.pids / spec.pid_file) if spec.pid_file else None,
            "command": spec.command(self.paths.base, self.ops.python),
        }

    def write_status(self, state: str) -> dict[str, Any]:
        return write_status(self.status_path, {
            "state": state, "started_at": self.started_at, "interval": self.interval,
            "policy": asdict(self.policy),
            "programs": {name: self.program_doc(name) for name in self.machines},
        }, daemon=True, clock=self.clock)


def reset_offline(paths: Paths, name: str) -> dict | None:
    """Clear a program's failures in watchdog.json while no watchdog runs; returns its new entry."""
    doc = read_status(paths.status_file(STATUS_NAME))
    entry = ((doc or {}).get("programs") or {}).get(name)
    if not isinstance(entry, dict):
        return None
    entry.update(state=State.STOPPED.value, fatal_reason=None, failure_times=[], failures_in_window=0,
                 consecutive_failures=0, backoff_until=None,
                 reset_at=utc_now_iso())
    payload = {k: v for k, v in doc.items() if k not in ("schema_version", "updated_at")}
    write_status(paths.status_file(STATUS_NAME), payload, daemon=False)
    return entry
