"""The daemon's handle on one trainer child process (``core/trainer_child.py``).

Why a separate process per job: a crash, OOM, hang or native abort in training must never take
the daemon down. The child runs in its own session (so the daemon can kill its whole process
group, accelerate workers included) and reports over a dedicated pipe; its stdout/stderr append
to ``logs/trainer_child.log`` (rotated daily at spawn). A reader thread turns the pipe into
messages and wakes the daemon loop.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from foundation.atomic_io import atomic_write_text
from foundation.json_lines import iter_json_lines
from foundation.paths import Paths

CHILD_SCRIPT = Path(__file__).resolve().parent / "trainer_child.py"
PID_NAME = "trainer_child.pid"


def rotate_daily(log_path: Path, keep_days: int = 14) -> None:
    """Rename ``x.log`` to ``x.log.YYYY-MM-DD`` when it was last written on an earlier (UTC) day."""
    try:
        st = log_path.stat()
    except FileNotFoundError:
        return
    day = datetime.fromtimestamp(st.st_mtime, timezone.utc).date()
    if day < datetime.now(timezone.utc).date():
        target = log_path.with_name(f"{log_path.name}.{day.isoformat()}")
        if not target.exists():
            os.replace(log_path, target)
    olds = sorted(log_path.parent.glob(log_path.name + ".*"))
    for old in olds[:-keep_days] if keep_days > 0 else []:
        try:
            old.unlink()
        except OSError:
            pass


class ChildHandle:
    def __init__(self, paths: Paths, *, wake: Callable[[], None], python: str = sys.executable,
                 env: dict | None = None, log_keep_days: int = 14):
        self.paths = paths
        self.wake = wake
        self.python = python
        self.extra_env = env or {}
        self.log_keep_days = log_keep_days
        self.proc: subprocess.Popen | None = None
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.state = "new"  # new -> starting -> ready -> busy -> exited
        self.spawned_at = 0.0
        self.ready_at: float | None = None
        self.job_id: str | None = None
        self.jobs_done = 0
        self.exiting_since: float | None = None
        self.log_path = paths.logs / "trainer_child.log"
        self._log_offset = 0
        self._eof = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ChildHandle":
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        rotate_daily(self.log_path, self.log_keep_days)
        r, w = os.pipe()
        env = dict(os.environ)
        env.update({"TRAINER_CHILD_MSG_FD": str(w), "TRAINER_CHILD_PARENT_PID": str(os.getpid()),
                    "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "TRAINER_BASE_DIR": str(self.paths.base)})
        env.update(self.extra_env)
        logf = open(self.log_path, "ab")
        self._log_offset = logf.tell()
        try:
            self.proc = subprocess.Popen([self.python, str(CHILD_SCRIPT)], stdin=subprocess.PIPE,
                                         stdout=logf, stderr=subprocess.STDOUT, pass_fds=(w,), env=env,
                                         cwd=str(CHILD_SCRIPT.parents[2]), start_new_session=True)
        finally:
            os.close(w)
            logf.close()
        self.state = "starting"
        self.spawned_at = time.monotonic()
        atomic_write_text(self.paths.pids / PID_NAME, f"{self.proc.pid}\n")
        threading.Thread(target=self._reader, args=(r,), daemon=True, name=f"child-{self.proc.pid}").start()
        return self

    def _reader(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
            for msg in iter_json_lines(f):
                if msg.get("type") == "ready":
                    self.ready_at = time.monotonic()
                    self.jobs_done = int(msg.get("jobs_done") or 0)
                    if self.state != "exited":
                        self.state = "ready"
                self.messages.put(msg)
                self.wake()
        self._eof.set()
        self.messages.put({"type": "eof"})
        self.wake()

    def send(self, msg: dict) -> bool:
        if self.proc is None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def command(self, cmd: str) -> bool:
        """pause / resume / stop / skip for the job this child runs (ignored by the child when
        it is already on another job)."""
        return self.send({"cmd": cmd, "job_id": self.job_id})

    def run_job(self, job_doc: dict) -> bool:
        ok = self.send({"cmd": "job", "job": job_doc})
        if ok:
            self.state = "busy"
            self.job_id = job_doc.get("job_id")
        return ok

    def poll(self) -> int | None:
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None and self.state != "exited":
            self.state = "exited"
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_reports(self, timeout: float = 2.0) -> None:
        """Wait until the message pipe hit EOF (everything the child said has been queued)."""
        self._eof.wait(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def close_stdin(self) -> None:
        """EOF on the child's stdin: it exits (when idle, at once; mid-job, also at once)."""
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        """Ask an idle child to exit (stdin EOF), then kill what is left."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.wait(timeout) is None:
            self.kill()
            self.wait(5)
        self.clear_pid_file()

    def clear_pid_file(self) -> None:
        p = self.paths.pids / PID_NAME
        try:
            if p.read_text().strip() == str(self.pid):
                p.unlink()
        except (FileNotFoundError, ValueError):
            pass

    def stderr_tail(self, max_bytes: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                start = max(self._log_offset, end - max_bytes)
                f.seek(start)
                return f.read(end - start).decode("utf-8", "replace")
        except OSError:
            return ""


def kill_stale_child(paths: Paths) -> int | None:
    """A trainer child left by a previous daemon (should already be dead through PDEATHSIG):
    kill its process group. Only a process whose command line is our child script is touched."""
    p = paths.pids / PID_NAME
    try:
        pid = int(p.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        cmdline = ""
    killed = None
    if "trainer_child.py" in cmdline:
        try:
            os.killpg(pid, signal.SIGKILL)
            killed = pid
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            except (ProcessLookupError, PermissionError):
                pass
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            try:  # zombie of a dead parent is reaped by init; just wait a little
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    return killed
