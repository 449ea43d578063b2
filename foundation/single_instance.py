"""One daemon per base dir: an OS lock (``flock``) on ``.pids/<name>.lock`` plus a PID file.

Why flock and not just a PID file: the kernel drops the lock when the process dies, however it
dies (SIGKILL included), so a stale PID file can never block a restart, and two daemons starting
at the same moment cannot both win. The PID file (written atomically after the lock is held) is
for tools and people: ``trainctl daemon stop`` signals it, and a refused second daemon names it.
The lock fd is not inherited by child processes (Python fds are non-inheritable), so a trainer
child that outlives its daemon for a moment cannot hold the lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from foundation.atomic_io import atomic_write_text


class AlreadyRunning(RuntimeError):
    def __init__(self, name: str, pid: int | None, lock_path: Path):
        self.pid = pid
        self.lock_path = lock_path
        who = f"pid {pid}" if pid else "another process (pid unknown)"
        super().__init__(f"{name} is already running ({who}; lock {lock_path})")


def read_pid(pid_path: str | os.PathLike) -> int | None:
    try:
        text = Path(pid_path).read_text().strip()
        return int(text.split()[0]) if text else None
    except (FileNotFoundError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SingleInstance:
    """``with SingleInstance(pids_dir, "training_daemon"):`` -- raises AlreadyRunning."""

    def __init__(self, pids_dir: str | os.PathLike, name: str):
        self.name = name
        self.dir = Path(pids_dir)
        self.lock_path = self.dir / f"{name}.lock"
        self.pid_path = self.dir / f"{name}.pid"
        self._fd: int | None = None

    def acquire(self) -> "SingleInstance":
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.name, read_pid(self.pid_path), self.lock_path) from None
        self._fd = fd
        atomic_write_text(self.pid_path, f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if read_pid(self.pid_path) == os.getpid():
            try:
                self.pid_path.unlink()
            except FileNotFoundError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "SingleInstance":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(pids_dir: str | os.PathLike, name: str) -> bool:
    """True when some process holds the lock (the daemon is running), without taking it."""
    lock_path = Path(pids_dir) / f"{name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def running_pid(pids_dir: str | os.PathLike, name: str) -> int | None:
    """PID of the running instance, or None when none holds the lock."""
    if not is_locked(pids_dir, name):
        return None
    return read_pid(Path(pids_dir) / f"{name}.pid")
