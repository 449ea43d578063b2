"""One daemon per base dir: an OS lock (``flock``, via foundation.locking) on ``.pids/<name>.lock`` plus a PID file.

Why flock and not just a PID file: the kernel drops the lock when the process dies, however it
dies (SIGKILL included), so a stale PID file can never block a restart, and two daemons starting
at the same moment cannot both win. The PID file (written atomically after the lock is held) is
for tools and people: ``trainctl daemon stop`` signals it, and a refused second daemon names it.
The lock fd is not inherited by child processes (it is opened close-on-exec), so a trainer
child that outlives its daemon for a moment cannot hold the lock.
"""
from __future__ import annotations

import os
from pathlib import Path

from foundation.atomic_io import atomic_write_text
from foundation.locking import FileMutex, held_elsewhere


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


# Held locks stay referenced here until release(): filelock frees a lock when its object is garbage
# collected, and a daemon that drops its SingleInstance must keep the lock until it exits.
_HELD: set[FileMutex] = set()


class SingleInstance:
    """``with SingleInstance(pids_dir, "training_daemon"):`` -- raises AlreadyRunning."""

    def __init__(self, pids_dir: str | os.PathLike, name: str):
        self.name = name
        self.dir = Path(pids_dir)
        self.lock_path = self.dir / f"{name}.lock"
        self.pid_path = self.dir / f"{name}.pid"
        # not per-thread: a daemon may release at shutdown from another thread than it acquired in
        self._lock = FileMutex(self.lock_path, per_thread=False)

    def acquire(self) -> "SingleInstance":
        if self._lock.held or not self._lock.try_acquire():  # held already: a second acquire is refused too
            raise AlreadyRunning(self.name, read_pid(self.pid_path), self.lock_path)
        _HELD.add(self._lock)
        atomic_write_text(self.pid_path, f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        if not self._lock.held:
            return
        if read_pid(self.pid_path) == os.getpid():
            try:
                self.pid_path.unlink()
            except FileNotFoundError:
                pass
        self._lock.release()
        _HELD.discard(self._lock)

    def __enter__(self) -> "SingleInstance":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(pids_dir: str | os.PathLike, name: str) -> bool:
    """True when some process holds the lock (the daemon is running), without taking it."""
    return held_elsewhere(Path(pids_dir) / f"{name}.lock")


def running_pid(pids_dir: str | os.PathLike, name: str) -> int | None:
    """PID of the running instance, or None when none holds the lock."""
    if not is_locked(pids_dir, name):
        return None
    return read_pid(Path(pids_dir) / f"{name}.pid")
