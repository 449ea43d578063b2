"""Saving what a hung process is doing, then killing it as a process group.

Python stacks, best first:
  1. ``py-spy dump --pid PID`` when py-spy is installed (reads the process from outside: works on
     a process stuck anywhere, also one stopped by SIGSTOP);
  2. SIGUSR1 when the process registered ``faulthandler`` on it (the trainer child does: see
     core/daemon/trainer_child.py): the stacks go to its log, and the new bytes are copied. The
     signal is sent only when /proc/PID/status shows SIGUSR1 caught: its default action kills.
     A stopped process (state T) gets SIGCONT after it, or the handler would never run;
  3. always: what /proc says (state, wait channel, each thread's state).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

PY_SPY_TIMEOUT_S = 30.0


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def proc_state(pid: int) -> str:
    """One letter (R, S, D, T, Z, ...) or "" when the process is gone."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[0] if ")" in stat else ""


def catches(pid: int, sig: int) -> bool:
    """The process has a handler for ``sig`` (SigCgt in /proc/PID/status)."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def proc_report(pid: int) -> str:
    lines = [f"cmdline: {_read(f'/proc/{pid}/cmdline').replace(chr(0), ' ').strip()}",
             f"state: {proc_state(pid) or 'gone'}   wchan: {_read(f'/proc/{pid}/wchan') or '-'}"]
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        tids = []
    for tid in tids:
        comm = _read(f"/proc/{pid}/task/{tid}/comm").strip()
        lines.append(f"  thread {tid} ({comm}): state {proc_state_task(pid, tid)}, "
                     f"wchan {_read(f'/proc/{pid}/task/{tid}/wchan') or '-'}")
    return "\n".join(lines)


def proc_state_task(pid: int, tid: int) -> str:
    stat = _read(f"/proc/{pid}/task/{tid}/stat")
    return stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"


def _py_spy(pid: int) -> str | None:
    exe = shutil.which("py-spy")
    if not exe:
        return None
    try:
        r = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True,
                           timeout=PY_SPY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        return f"(py-spy failed: {e})"
    return r.stdout if r.returncode == 0 else f"(py-spy exited {r.returncode}: {r.stderr.strip()[-500:]})"


STOPPED_DUMP_WINDOW_S = 0.1


def _size(path: Path, default: int) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return default


def _faulthandler(pid: int, log_file: Path, wait_s: float) -> str | None:
    """SIGUSR1 -> the process's faulthandler writes to its log; return what was added."""
    if not catches(pid, signal.SIGUSR1):
        return None
    try:
        start = log_file.stat().st_size
    except OSError:
        return None
    stopped = proc_state(pid) == "T"
    tick = threading.Event()
    try:
        os.kill(pid, signal.SIGUSR1)
        if stopped:
            # A stopped process runs no handler until it is continued. Continue it just long enough
            # for the handler (it writes the dump in C, in milliseconds), then stop it again: left
            # running it would go on working until the kill, and could even finish its job.
            os.kill(pid, signal.SIGCONT)
            # the pending SIGUSR1 is handled before any Python code runs: the first new bytes are the
            # dump's; give the handler a moment to write every thread, then freeze the process again
            until = time.monotonic() + wait_s
            while time.monotonic() < until and _size(log_file, start) == start:
                tick.wait(0.005)
            tick.wait(STOPPED_DUMP_WINDOW_S)
            os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    # The dump is written in one burst by the signal handler: wait until the log grew and then
    # stayed the same size for a moment (or the deadline).
    deadline, last, stable_since = time.monotonic() + wait_s, start, None
    while time.monotonic() < deadline:
        size = _size(log_file, start)
        if size > start and size == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 0.3:
                break
        else:
            stable_since = None
        last = size
        tick.wait(0.05)
    with open(log_file, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    note = ("(the process was stopped (state T): SIGCONT sent so that its faulthandler could run, then "
            "SIGSTOP again)\n") if stopped else ""
    return note + (text or "(nothing written within the wait)")


def dump_stacks(pid: int, out: Path, label: str, log_file: Path | None = None, wait_s: float = 5.0) -> str:
    """Write what ``pid`` is doing to ``out``; returns the method that gave Python stacks
    (py-spy | faulthandler | proc-only)."""
    header = f"# {label}: pid {pid} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n\n## /proc\n{proc_report(pid)}\n"
    method, body = "proc-only", None
    spy = _py_spy(pid)
    if spy is not None:
        method, body = "py-spy", spy
    if (body is None or body.startswith("(py-spy")) and log_file is not None:
        fh = _faulthandler(pid, log_file, wait_s)
        if fh is not None:
            method, body = "faulthandler", (f"{body}\n" if body else "") + fh
    if body is None:
        body = ("(no Python stacks: install py-spy (pip install py-spy), or register faulthandler on SIGUSR1 "
                "in the program: faulthandler.register(signal.SIGUSR1, all_threads=True))")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{header}\n## Python stacks ({method})\n{body}\n", encoding="utf-8")
    return method


def kill_group(pid: int) -> str:
    """SIGKILL the process group ``pid`` leads (its children with it), else the process alone."""
    try:
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, signal.SIGKILL)
            return "process group"
        os.kill(pid, signal.SIGKILL)
        return "process"
    except ProcessLookupError:
        return "already gone"
