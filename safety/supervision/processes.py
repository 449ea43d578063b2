"""The watchdog's hands and eyes on real processes: spawn (or adopt), observe, stop, log tail.

Programs run in their own session (``start_new_session``) so that a forced stop can SIGKILL the
whole process group (the training daemon's trainer child included), and so that they outlive a
watchdog that is itself killed: the next watchdog adopts them through their PID files.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from foundation.json_lines import tail_lines
from foundation.paths import REPO_ROOT, Paths
from foundation.single_instance import read_pid
from foundation.status_io import parse_iso, read_status
from safety.supervision.programs import ProgramSpec
from safety.supervision.state_machine import Observation

LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 50 * 1024 * 1024
LOG_KEEP = 3


@dataclass
class ProcHandle:
    pid: int
    popen: subprocess.Popen | None = None
    """Set when this watchdog spawned it (exit status known); None for an adopted process."""
    owned: bool = True
    """Started by a watchdog (this one or its predecessor): stopped with the watchdog."""
    started_wall: float = 0.0


def log_path(paths: Paths, name: str) -> Path:
    return paths.logs / f"{name}.out"


def rotate_log(path: Path, max_bytes: int = LOG_ROTATE_BYTES, keep: int = LOG_KEEP) -> None:
    """Before a (re)start: a log over ``max_bytes`` becomes ``.1`` (older ones shift, ``keep`` kept),
    so a program that crash-loops for weeks cannot fill the disk with its output."""
    try:
        if path.stat().st_size <= max_bytes:
            return
    except FileNotFoundError:
        return
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


def log_tail(path: Path, n: int = LOG_TAIL_LINES, max_bytes: int = 16384) -> list[str]:
    return tail_lines(path, max_bytes)[-n:]


def matching_pid(pid: int | None, match: str) -> int | None:
    """``pid`` when it is a live (not zombie) process whose command line contains ``match``."""
    if not pid or pid <= 0 or pid == os.getpid():
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return pid if match in " ".join(p.cmdline()) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class ProcessOps:
    """Real-process implementations of the state machine's spawn / probe / terminate / kill."""

    def __init__(self, paths: Paths, python: str = sys.executable, clock=time.time):
        self.paths, self.python, self.clock = paths, python, clock

    def spawn(self, spec: ProgramSpec, prior: dict | None = None) -> ProcHandle:
        """Adopt a running instance (the PID a previous watchdog recorded, or the program's own PID
        file) or start a new one. Raises OSError when the command cannot be started."""
        match = spec.cmdline_match()
        prior = prior or {}
        pid = matching_pid(prior.get("pid"), match)
        if pid:
            return ProcHandle(pid, None, owned=bool(prior.get("owned", True)), started_wall=self.clock())
        if spec.pid_file:
            pid = matching_pid(read_pid(self.paths.pids / spec.pid_file), match)
            if pid:
                return ProcHandle(pid, None, owned=False, started_wall=self.clock())
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TRAINER_BASE_DIR": str(self.paths.base), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        rotate_log(log_path(self.paths, spec.name))
        with open(log_path(self.paths, spec.name), "ab") as out:
            out.write(f"--- watchdog: starting {spec.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            out.flush()
            popen = subprocess.Popen(spec.command(self.paths.base, self.python), cwd=str(REPO_ROOT), env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return ProcHandle(popen.pid, popen, owned=True, started_wall=self.clock())

    def probe(self, spec: ProgramSpec, h: ProcHandle) -> Observation:
        if h.popen is not None:
            rc = h.popen.poll()
            if rc is not None:
                return Observation(False, exit=_exit_info(rc))
        elif matching_pid(h.pid, spec.cmdline_match()) is None:
            return Observation(False, exit={"code": None, "signal": None,
                                            "reason": "exited (adopted process: exit status unknown)"})
        if not spec.status_file:
            return Observation(True, healthy=True, detail="alive (no heartbeat file)")
        now = self.clock()
        rel = f"status/{spec.status_file}.json"
        doc = read_status(self.paths.status_file(spec.status_file)) or {}
        beat = None
        key = spec.heartbeat_key if spec.heartbeat_key in doc else "heartbeat_at"
        if doc.get("pid") == h.pid and isinstance(doc.get(key), str):
            try:
                beat = parse_iso(doc[key]).timestamp()
            except ValueError:
                beat = None
        if beat is not None:
            age = now - beat
            if age <= spec.heartbeat_timeout:
                return Observation(True, healthy=True, detail=f"heartbeat {age:.0f}s ago")
            if now - h.started_wall >= spec.start_grace:
                return Observation(True, healthy=False, detail=f"{rel} heartbeat {age:.0f}s old "
                                                               f"(limit {spec.heartbeat_timeout:.0f}s)")
            return Observation(True, healthy=None, detail=f"heartbeat {age:.0f}s old, in start grace")
        if now - h.started_wall < spec.start_grace:
            return Observation(True, healthy=None, detail=f"waiting for the first heartbeat in {rel}")
        return Observation(True, healthy=False,
                           detail=f"no heartbeat from pid {h.pid} in {rel} for {now - h.started_wall:.0f}s")

    @staticmethod
    def terminate(h: ProcHandle) -> None:
        try:
            os.kill(h.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    @staticmethod
    def kill(h: ProcHandle) -> None:
        """SIGKILL the process group when the program leads its own (children die with it)."""
        try:
            if os.getpgid(h.pid) == h.pid:
                os.killpg(h.pid, signal.SIGKILL)
            else:
                os.kill(h.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _exit_info(rc: int) -> dict:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return {"code": None, "signal": name, "reason": f"killed by {name}"}
    return {"code": rc, "signal": None, "reason": f"exited with code {rc}"}
