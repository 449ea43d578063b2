"""What every long-running process does around its main loop: hold its single-instance lock, and
stop cleanly on SIGTERM / SIGINT.

Why an Event and not an exception from the signal handler: the loop waits on the Event between
passes (``stop.wait(interval)``), so a stop never interrupts a pass half-way (a status file half
updated, a process half killed); it finishes the pass and returns.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from foundation.single_instance import AlreadyRunning, SingleInstance


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (a new Event when None), set by SIGTERM (the watchdog's or ``trainctl``'s stop) and
    SIGINT (Ctrl-C). Call it from the main thread (Python runs signal handlers only there)."""
    stop = stop if stop is not None else threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_passes(stop: threading.Event, interval: float, one_pass: Callable[[], object],
               log: logging.Logger, what: str) -> None:
    """``one_pass()`` every ``interval`` seconds until ``stop`` is set. A pass that raises is logged
    (``<what> failed``) and the next one runs: one bad pass must not end a daemon that runs for weeks."""
    while not stop.is_set():
        try:
            one_pass()
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("%s failed", what)
        stop.wait(interval)


@contextmanager
def only_instance(pids_dir: str | os.PathLike, name: str) -> Iterator[SingleInstance]:
    """Hold ``.pids/<name>.lock`` for the block. A second copy prints who holds it (pid, lock file)
    on stderr and exits with status 1, which the watchdog reads as "adopt the running one"."""
    try:
        lock = SingleInstance(pids_dir, name).acquire()
    except AlreadyRunning as e:
        print(e, file=sys.stderr)
        raise SystemExit(1) from None
    try:
        yield lock
    finally:
        lock.release()
