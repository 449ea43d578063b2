"""Waiting on observable state with a deadline: the only way tests synchronise with processes.

A test never sleeps a fixed time and hopes; it names what it waits for, polls it, and fails with
that name when the deadline passes (or at once when a watched process died meanwhile).
"""
from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
             proc: subprocess.Popen | None = None) -> T:
    """Return ``predicate()``'s first truthy value; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process {proc.pid} exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)  # the polling interval, not a synchronisation
