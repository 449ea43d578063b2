"""Inbox watching: inotify events (watchdog) in, "this entry is complete, take it" out.

Completeness, because a file must never be taken while it is still being written:
- a rename into the inbox is complete by construction (taken at once);
- a close-after-write (inotify ``IN_CLOSE_WRITE``) marks the file complete once nothing else
  changed for ``close_settle`` seconds (a short settle so a writer that re-opens to append is not
  cut off);
- otherwise (polling observer, network file systems, a writer that keeps the file open) the
  entry is complete when its size and mtime have not changed for ``stable_seconds``.
Names that are in-progress by convention are never taken: dotfiles, ``*.tmp``, ``*.part``,
``*.partial``, ``*.crdownload``, ``*.swp``, ``*~``.

Priority by folder: ``inbox/high/`` -> high, ``inbox/low/`` -> low, ``inbox/`` and
``inbox/normal/`` -> normal. Any other entry (a sub-folder, a FIFO, a symlink, a wrong extension)
is still an entry: the daemon quarantines it with a reason rather than ignoring it forever.

``InboxTracker`` is pure logic over an injectable clock and ``lstat`` (unit-testable without
sleeping); the watchdog handler only feeds it events and wakes the intake loop. A periodic
``scan()`` catches anything the observer missed (and files present at start-up).
"""
from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from foundation.paths import Paths

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".swx", "~", ".download",
                    ".filepart", ".lock")
PRIORITY_DIRS = {"high": "high", "low": "low", "normal": "normal"}


def is_ignored_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


@dataclass
class Pending:
    path: Path
    priority: str
    first_seen: float
    last_change: float
    size: int
    mtime_ns: int
    closed: bool = False
    is_dir: bool = False
    moved_in: bool = False
    """Renamed into the inbox: complete by construction, no settle time needed."""


class InboxTracker:
    def __init__(self, paths: Paths, *, stable_seconds: float = 0.5, close_settle: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, lstat: Callable = os.lstat,
                 listdir: Callable = os.listdir):
        self.paths = paths
        self.inbox = paths.inbox
        self.stable_seconds = stable_seconds
        self.close_settle = min(close_settle, stable_seconds) if stable_seconds > 0 else 0.0
        self.clock = clock
        self.lstat = lstat
        self.listdir = listdir
        self._pending: dict[Path, Pending] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ classification
    def priority_of(self, path: Path) -> str | None:
        """Priority of an inbox entry, None when the path is not an entry (the priority folders
        themselves, deeper paths, ignored names)."""
        if is_ignored_name(path.name):
            return None
        parent = path.parent
        if parent == self.inbox:
            if path.name in PRIORITY_DIRS and self._is_real_dir(path):
                return None
            return "normal"
        if parent.parent == self.inbox and parent.name in PRIORITY_DIRS:
            return PRIORITY_DIRS[parent.name]
        return None

    def _is_real_dir(self, path: Path) -> bool:
        try:
            return stat.S_ISDIR(self.lstat(path).st_mode)
        except OSError:
            return False

    def entries_on_disk(self) -> list[Path]:
        out = []
        for folder in (self.inbox, *(self.inbox / d for d in PRIORITY_DIRS)):
            try:
                names = self.listdir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for n in names:
                p = folder / n
                if self.priority_of(p) is not None:
                    out.append(p)
        return out

    # ------------------------------------------------------------ events
    def on_event(self, path: str | os.PathLike, *, closed: bool = False, gone: bool = False,
                 moved_in: bool = False) -> None:
        p = Path(path)
        prio = self.priority_of(p)
        if prio is None:
            # an event inside a sub-folder counts as a change of that sub-folder entry
            if p.parent != self.inbox and p.parent.parent != self.inbox:
                return
            par = p.parent
            if self.priority_of(par) is None:
                return
            p, prio, closed, gone, moved_in = par, self.priority_of(par), False, False, False
        now = self.clock()
        with self._lock:
            if gone:
                self._pending.pop(p, None)
                return
            ent = self._pending.get(p)
            if ent is None:
                ent = self._pending[p] = Pending(p, prio, now, now, -1, -1, closed)
            else:
                ent.last_change = now
                ent.closed = closed
                ent.priority = prio
            ent.moved_in = moved_in

    def scan(self) -> None:
        now = self.clock()
        on_disk = set(self.entries_on_disk())
        with self._lock:
            for p in on_disk:
                if p not in self._pending:
                    self._pending[p] = Pending(p, self.priority_of(p) or "normal", now, now, -1, -1, False)
            for p in list(self._pending):
                if p not in on_disk:
                    del self._pending[p]

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------ readiness
    def ready(self) -> list[Pending]:
        """Entries complete now (oldest first). Stats every pending entry; a change resets it."""
        now = self.clock()
        out = []
        with self._lock:
            for p, ent in list(self._pending.items()):
                try:
                    st = self.lstat(p)
                except FileNotFoundError:
                    del self._pending[p]
                    continue
                except OSError:
                    continue
                size, mtime = st.st_size, st.st_mtime_ns
                ent.is_dir = stat.S_ISDIR(st.st_mode)
                if ent.size == -1:
                    # First look: without a close event, the stability window starts now (two
                    # observations at least stable_seconds apart must agree).
                    if not ent.closed:
                        ent.last_change = now
                    ent.size, ent.mtime_ns = size, mtime
                elif (size, mtime) != (ent.size, ent.mtime_ns):
                    ent.last_change = now
                    ent.closed = ent.moved_in = False
                    ent.size, ent.mtime_ns = size, mtime
                quiet = now - ent.last_change
                if stat.S_ISLNK(st.st_mode) or not (stat.S_ISREG(st.st_mode) or ent.is_dir):
                    out.append(ent)  # links/FIFOs/sockets: nothing to wait for (never opened)
                elif ent.moved_in or (ent.closed and quiet >= self.close_settle):
                    out.append(ent)
                elif quiet >= self.stable_seconds:
                    out.append(ent)
        out.sort(key=lambda e: (e.first_seen, str(e.path)))
        return out

    def next_deadline(self) -> float | None:
        """Seconds until the earliest pending entry may become ready (None when nothing pending)."""
        now = self.clock()
        with self._lock:
            if not self._pending:
                return None
            waits = []
            for e in self._pending.values():
                need = 0.0 if e.moved_in else (self.close_settle if e.closed else self.stable_seconds)
                waits.append(max(0.0, e.last_change + need - now))
            return min(waits)


def make_handler(tracker: InboxTracker, wake: Callable[[], None]):
    """A watchdog handler feeding ``tracker``."""
    from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent,
                                 FileClosedEvent, FileClosedNoWriteEvent, FileCreatedEvent,
                                 FileDeletedEvent, FileModifiedEvent, FileMovedEvent,
                                 FileOpenedEvent, FileSystemEventHandler)

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if isinstance(event, (FileOpenedEvent, FileClosedNoWriteEvent)):
                return
            if isinstance(event, DirModifiedEvent) and Path(os.fsdecode(event.src_path)) in (
                    tracker.inbox, *(tracker.inbox / d for d in PRIORITY_DIRS)):
                return  # the folder itself changed because an entry did: handled by the entry
            src = Path(os.fsdecode(event.src_path))
            if isinstance(event, (FileMovedEvent, DirMovedEvent)):
                tracker.on_event(src, gone=True)
                tracker.on_event(Path(os.fsdecode(event.dest_path)), closed=True, moved_in=True)
            elif isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
                tracker.on_event(src, gone=True)
            elif isinstance(event, FileClosedEvent):
                tracker.on_event(src, closed=True)
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent, DirCreatedEvent, DirModifiedEvent)):
                tracker.on_event(src)
            else:
                tracker.on_event(src)
            wake()

    return _Handler()


def make_wake_handler(wake: Callable[[], None]):
    from watchdog.events import FileSystemEventHandler

    class _Wake(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            wake()

    return _Wake()


def start_observer(paths: Paths, tracker: InboxTracker, wake_intake: Callable[[], None],
                   wake_main: Callable[[], None], *, polling: bool, poll_interval: float):
    """Start a watchdog observer on inbox/ (recursive: high/low sub-folders) and control/.
    Returns (observer, kind) where kind is "inotify" or "polling"; falls back to polling when
    inotify cannot be set up (e.g. out of watches)."""
    from watchdog.observers.polling import PollingObserver

    def build(use_polling: bool):
        if use_polling:
            obs = PollingObserver(timeout=poll_interval)
            kind = "polling"
        else:
            from watchdog.observers.inotify import InotifyObserver
            obs = InotifyObserver()
            kind = "inotify"
        obs.schedule(make_handler(tracker, wake_intake), str(paths.inbox), recursive=True)
        obs.schedule(make_wake_handler(wake_main), str(paths.control), recursive=False)
        obs.daemon = True
        obs.start()
        return obs, kind

    if not polling:
        try:
            return build(False)
        except (OSError, ImportError):
            pass
    return build(True)
