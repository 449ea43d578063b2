"""Inter-process file locks: the one implementation every writer shares, built on ``filelock``.

On Unix ``filelock.FileLock`` is an exclusive ``flock`` on the lock file, so the kernel drops the
lock when its holder dies (SIGKILL included): a crashed process can never leave a stale lock. The
lock file stays in place after release (unlinking it would split waiters across inodes). The fd is
opened close-on-exec, so a child process never inherits the lock.

Two uses:

* ``with FileMutex(path, timeout=...):`` -- wait (up to ``timeout`` seconds) for exclusive use of a
  shared file, e.g. the read-modify-write of a status file several processes merge into, or one
  deployment at a time. Re-entrant on the same object within one thread; other threads and other
  processes wait. Waiting too long raises :class:`LockTimeout` (a ``TimeoutError``, so an
  ``OSError``) naming the lock, instead of hanging behind a stuck holder for ever.
* ``FileMutex(path, per_thread=False).try_acquire()`` -- take the lock now or report that someone
  else holds it (one daemon per base dir); ``held_elsewhere(path)`` asks the same without keeping it.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout


class LockTimeout(TimeoutError):
    """Another process held the lock for longer than the caller was willing to wait."""

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout
        super().__init__(f"could not lock {path} within {timeout:g} s (another process holds it)")


class FileMutex:
    """An exclusive inter-process lock on ``path`` (created, with its folder, when missing).

    ``per_thread`` (the default) keeps the hold count per thread, so two threads sharing the object
    still exclude each other; pass False for a lock taken in one thread and released in another
    (a daemon's single-instance lock released at shutdown)."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0, per_thread: bool = True):
        self.path = Path(path)
        self.timeout = timeout
        self._lock = FileLock(str(self.path), timeout=timeout, thread_local=per_thread)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._lock.is_locked

    def acquire(self) -> None:
        """Wait up to ``timeout`` seconds; raises LockTimeout."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise LockTimeout(self.path, self.timeout) from None

    def try_acquire(self) -> bool:
        """Take the lock if nobody else holds it; False (at once) when someone does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "FileMutex":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def held_elsewhere(path: str | os.PathLike) -> bool:
    """True when some other holder (another process, or another lock object) has ``path`` locked.
    Does not create the lock file; a momentary probe, released at once."""
    if not Path(path).exists():
        return False
    probe = FileMutex(path, per_thread=False)
    if probe.try_acquire():
        probe.release()
        return False
    return True
