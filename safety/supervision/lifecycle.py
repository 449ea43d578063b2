"""What ``scripts/start_all.sh`` and ``scripts/stop_all.sh`` do around the watchdog:

* ``wait_started``: after the watchdog is launched, wait until each program it supervises is up
  (its own PID file names the PID the watchdog started), and say so, one line per program.
* ``stop_all``: SIGTERM the watchdog (which stops its programs, the training daemon with time to
  checkpoint), wait for it; then stop whatever of ours is still running from ``.pids/`` (started
  by hand, or left by a watchdog that was SIGKILLed). Only PIDs whose command line names one of our
  scripts are ever signalled: a stale PID file may name someone else's process by now.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

from foundation.paths import Paths
from foundation.single_instance import read_pid, running_pid
from foundation.status_io import read_status
from safety.supervision.processes import matching_pid
from safety.supervision.programs import default_programs
from safety.supervision.watchdog import INSTANCE_NAME, STATUS_NAME

Echo = Callable[[str], None]


def _label(name: str) -> str:
    return name.replace("_", " ")


def wait_started(paths: Paths, timeout: float, verb: str, echo: Echo, poll: float = 0.2) -> bool:
    """True when every program is up; False (after saying which and why) on FATAL or timeout."""
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    wait = threading.Event()
    while True:
        programs = (read_status(paths.status_file(STATUS_NAME)) or {}).get("programs") or {}
        pending, fatal = [], []
        for name, p in programs.items():
            pid, state = p.get("pid"), p.get("state")
            up = pid and state in ("STARTING", "RUNNING") and (
                not p.get("pid_file") or read_pid(p["pid_file"]) == pid)
            if up and name not in reported:
                reported.add(name)
                echo(f"{_label(name)} {verb if p.get('owned', True) else 'already running'} (pid {pid}); "
                     f"output: {p.get('log_file')}")
            elif state == "FATAL":
                fatal.append(name)
            elif state == "EXITED" and name not in reported:
                reported.add(name)
                echo(f"{_label(name)} stopped by request (exit code 0); to start it again: "
                     f"trainctl watchdog reset {name}")
            elif state == "EXITED":
                pass
            elif not up:
                pending.append(name)
        if programs and not pending and not fatal:
            return True
        if fatal or time.monotonic() > deadline:
            for name in fatal:
                p = programs[name]
                echo(f"{_label(name)} FAILED: {p.get('fatal_reason')}")
                for line in (p.get("last_log_lines") or [])[-10:]:
                    echo(f"    | {line}")
            for name in pending:
                p = programs[name]
                echo(f"{_label(name)} not up after {timeout:.0f}s (state {p.get('state')}; "
                     f"{(p.get('last_exit') or {}).get('reason') or p.get('health') or 'no detail'}); "
                     f"see {p.get('log_file')}")
            if not programs:
                echo(f"the watchdog wrote no status/watchdog.json within {timeout:.0f}s; see logs/watchdog.out")
            return False
        wait.wait(poll)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], timeout: float, poll: float = 0.1) -> list[int]:
    deadline = time.monotonic() + timeout
    wait = threading.Event()
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        wait.wait(poll)


def _kill(pid: int, sig: int) -> None:
    try:
        if sig == signal.SIGKILL and os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # its own session: take its children with it
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _leftovers(paths: Paths) -> dict[str, int]:
    """Our programs still running, from the watchdog's last status and the programs' PID files."""
    found: dict[str, int] = {}
    programs = (read_status(paths.status_file(STATUS_NAME)) or {}).get("programs") or {}
    for name, p in programs.items():
        cmd = p.get("command") or []
        match = next((a for a in cmd if a.endswith(".py")), None)
        pid = matching_pid(p.get("pid"), match) if match else None
        if pid:
            found[name] = pid
    for spec in default_programs():
        if spec.name not in found and spec.pid_file:
            pid = matching_pid(read_pid(paths.pids / spec.pid_file), spec.cmdline_match())
            if pid:
                found[spec.name] = pid
    return found


def stop_all(paths: Paths, timeout: float, kill: bool, echo: Echo) -> bool:
    """Stop the watchdog and everything of ours; True when nothing is left running."""
    ok = True
    wd = running_pid(paths.pids, INSTANCE_NAME)
    if wd:
        echo(f"watchdog (pid {wd}): stopping it and the programs it started (up to {timeout:.0f}s)")
        _kill(wd, signal.SIGTERM)
        if _wait_gone([wd], timeout + 30):
            if kill:
                _kill(wd, signal.SIGKILL)
                echo(f"watchdog (pid {wd}) did not stop in time: SIGKILLed")
            else:
                echo(f"watchdog (pid {wd}) still running after {timeout + 30:.0f}s (use --kill)")
                ok = False
        else:
            echo(f"watchdog (pid {wd}) stopped")
    left = _leftovers(paths)
    for pid in left.values():
        _kill(pid, signal.SIGTERM)  # all at once; the training daemon checkpoints meanwhile
    still = set(_wait_gone(list(left.values()), timeout))
    for name, pid in left.items():
        if pid in still and kill:
            _kill(pid, signal.SIGKILL)
            _wait_gone([pid], 10)
            echo(f"{_label(name)} (pid {pid}) did not stop within {timeout:.0f}s: SIGKILLed")
        elif pid in still:
            echo(f"{_label(name)} (pid {pid}) still running after {timeout:.0f}s (use --kill)")
            ok = False
        else:
            echo(f"{_label(name)} (pid {pid}) stopped")
    if ok:
        echo("all stopped" if (wd or left) else "nothing was running; all stopped")
    return ok
