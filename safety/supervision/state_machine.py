"""One supervised program's lifecycle, as an explicit state machine (after supervisor's
``process.py``), with the restart policy of the trusted supervisors (systemd ``RestartSec`` with
back-off, Kubernetes CrashLoopBackOff):

    STOPPED --tick--> STARTING --alive startsecs--> RUNNING
    STARTING/RUNNING --died--> BACKOFF --backoff_until--> STARTING
    RUNNING --unhealthy (stale heartbeat)--> STOPPING --died--> BACKOFF (counted as a failure: "hung")
    any death that makes max_failures within failure_window --> FATAL (no restarts until reset())
    request_stop(): STARTING/RUNNING/BACKOFF --> STOPPING --died--> STOPPED (not a failure)
    RUNNING --exit code 0, restart "on-failure"--> EXITED (asked to stop, e.g. `trainctl stop`: stays
    down, like systemd's Restart=on-failure; reset() starts it again)

Back-off: initial * factor**(n-1) for the n-th consecutive failure, times a jitter factor in
[1 - jitter, 1 + jitter] (so programs that died together do not restart in lock-step), capped.
After ``reset_after`` seconds healthy the failure history is forgotten (the next crash restarts
after ``initial`` again).

Everything that touches the world is a parameter (clock, spawner, probe, terminate, kill, log
tail, random source), so the machine is tested with a fake clock and fake processes, no sleeping.
The clock is wall-clock seconds in production so that the state (failure times, back-off deadline)
can be saved in status/watchdog.json and restored by the next watchdog (``--once`` runs, restarts).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol


class State(str, Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float = 1.0
    """Seconds before the first restart after a failure."""
    backoff_factor: float = 2.0
    """Each consecutive failure multiplies the delay by this."""
    backoff_cap: float = 300.0
    """Longest delay between restarts (5 minutes)."""
    jitter: float = 0.2
    """The delay is multiplied by a random factor in [1 - jitter, 1 + jitter] (then capped)."""
    reset_after: float = 600.0
    """Healthy this long (alive, heartbeat fresh): the failure history is forgotten."""
    max_failures: int = 5
    """This many failures within failure_window make the program FATAL."""
    failure_window: float = 600.0
    """Seconds over which failures are counted."""
    startsecs: float = 1.0
    """Alive this long after the spawn: the start succeeded (STARTING -> RUNNING)."""

    def __post_init__(self) -> None:
        if self.backoff_initial <= 0 or self.backoff_cap < self.backoff_initial or self.backoff_factor < 1:
            raise ValueError("need 0 < backoff_initial <= backoff_cap and backoff_factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.max_failures < 1:
            raise ValueError("max_failures must be >= 1")

    def backoff(self, n_failures: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Delay before the restart that follows the ``n_failures``-th consecutive failure (n >= 1)."""
        base = self.backoff_initial * self.backoff_factor ** max(0, n_failures - 1)
        return min(self.backoff_cap, min(self.backoff_cap, base) * rng(1 - self.jitter, 1 + self.jitter))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RestartPolicy":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown restart policy keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: float(v) if k != "max_failures" else int(v) for k, v in d.items()})


@dataclass
class Observation:
    """What the probe saw of a process."""
    alive: bool
    healthy: bool | None = None
    """False: alive but its heartbeat is stale (a hang); None: not known yet (start grace)."""
    exit: dict[str, Any] | None = None
    """When dead: {"code", "signal", "reason"} as far as known."""
    detail: str = ""


class Handle(Protocol):
    pid: int


@dataclass
class Machine:
    name: str
    policy: RestartPolicy
    clock: Callable[[], float]
    spawn: Callable[[], Handle]
    """Starts the program (or adopts a running instance); raises OSError when it cannot."""
    probe: Callable[[Handle], Observation]
    terminate: Callable[[Handle], None] = lambda h: None
    """Polite stop (SIGTERM)."""
    kill: Callable[[Handle], None] = lambda h: None
    """Forced stop (SIGKILL to the process group)."""
    stop_timeout: float = 30.0
    restart_clean_exit: bool = False
    """Restart after exit code 0 too (systemd Restart=always); False: a clean exit stays EXITED."""
    log_tail: Callable[[], list[str]] = list
    rng: Callable[[float, float], float] = random.uniform

    state: State = State.STOPPED
    handle: Handle | None = None
    started_at: float | None = None
    healthy_since: float | None = None
    consecutive_failures: int = 0
    failures: list[float] = field(default_factory=list)
    restarts: int = 0
    spawns: int = 0
    backoff_until: float | None = None
    stop_deadline: float | None = None
    stop_reason: str | None = None
    last_exit: dict[str, Any] | None = None
    last_log_lines: list[str] = field(default_factory=list)
    fatal_reason: str | None = None
    health_detail: str = ""

    # ------------------------------------------------------------------ transitions
    def tick(self) -> State:
        """One supervision step; returns the state after it."""
        now = self.clock()
        if self.state in (State.STOPPED, State.BACKOFF):
            if self.state == State.STOPPED or now >= (self.backoff_until or 0):
                self._start(now)
            return self.state
        if self.state in (State.FATAL, State.EXITED) or self.handle is None:
            return self.state
        obs = self.probe(self.handle)
        if obs.alive:
            self.health_detail = obs.detail
        if self.state == State.STOPPING:
            if not obs.alive:
                self._died(now, obs, hung=self.stop_reason == "hung")
            elif self.stop_deadline is not None and now >= self.stop_deadline:
                self.kill(self.handle)
                self.stop_deadline = None  # killed once; the next ticks wait for the exit
            return self.state
        if not obs.alive:
            self._died(now, obs)
            return self.state
        if self.state == State.STARTING and now - (self.started_at or now) >= self.policy.startsecs:
            self.state = State.RUNNING
        if self.state == State.RUNNING:
            if obs.healthy is False:
                self.healthy_since = None
                self._begin_stop(now, "hung")
            elif obs.healthy:
                self.healthy_since = self.healthy_since if self.healthy_since is not None else now
                if now - self.healthy_since >= self.policy.reset_after and (self.consecutive_failures or self.failures):
                    self.consecutive_failures = 0
                    self.failures.clear()
        return self.state

    def request_stop(self) -> None:
        """Stop for good (the watchdog is shutting down): SIGTERM now, SIGKILL after stop_timeout."""
        if self.state in (State.STARTING, State.RUNNING) and self.handle is not None:
            self._begin_stop(self.clock(), "shutdown")
        elif self.state == State.STOPPING:
            self.stop_reason = "shutdown"
        elif self.state in (State.BACKOFF, State.STOPPED, State.EXITED):
            self.state = State.STOPPED
            self.backoff_until = None

    def reset(self) -> bool:
        """``trainctl watchdog reset NAME``: forget the failures; a FATAL (or EXITED) program is started again."""
        was_fatal = self.state == State.FATAL
        self.consecutive_failures = 0
        self.failures.clear()
        self.fatal_reason = None
        if self.state in (State.FATAL, State.BACKOFF, State.EXITED):
            self.state = State.STOPPED
            self.backoff_until = None
        return was_fatal

    # ------------------------------------------------------------------ internals
    def _start(self, now: float) -> None:
        try:
            handle = self.spawn()
        except OSError as e:
            self._failure(now, {"code": None, "signal": None, "reason": f"spawn failed: {e}"})
            return
        if self.spawns:
            self.restarts += 1
        self.spawns += 1
        self.handle, self.started_at, self.healthy_since = handle, now, None
        self.backoff_until = None
        self.state = State.STARTING

    def _begin_stop(self, now: float, reason: str) -> None:
        assert self.handle is not None
        self.terminate(self.handle)
        self.state, self.stop_reason = State.STOPPING, reason
        self.stop_deadline = now + self.stop_timeout

    def _died(self, now: float, obs: Observation, hung: bool = False) -> None:
        exit_info = dict(obs.exit or {"code": None, "signal": None, "reason": "exited"})
        if hung:
            exit_info["reason"] = f"hung ({self.health_detail or 'heartbeat stale'}); stopped by the watchdog ({exit_info['reason']})"
        self.handle, self.healthy_since, self.stop_deadline = None, None, None
        if self.stop_reason == "shutdown":
            self.last_exit = {**exit_info, "at": now}
            self.state, self.stop_reason = State.STOPPED, None
            return
        clean = self.stop_reason is None and exit_info.get("code") == 0 and self.state == State.RUNNING
        self.stop_reason = None
        if clean and not self.restart_clean_exit:
            self.last_exit = {**exit_info, "at": now}
            self.last_log_lines = list(self.log_tail())
            self.state = State.EXITED
            return
        self._failure(now, exit_info)

    def _failure(self, now: float, exit_info: dict[str, Any]) -> None:
        self.last_exit = {**exit_info, "at": now}
        self.last_log_lines = list(self.log_tail())
        self.failures = [t for t in self.failures if now - t < self.policy.failure_window] + [now]
        self.consecutive_failures += 1
        if len(self.failures) >= self.policy.max_failures:
            self.state, self.handle, self.backoff_until = State.FATAL, None, None
            self.fatal_reason = (f"{len(self.failures)} failed starts within {self.policy.failure_window:.0f}s; "
                                 f"last: {exit_info.get('reason')}")
            return
        self.backoff_until = now + self.policy.backoff(self.consecutive_failures, self.rng)
        self.state = State.BACKOFF
