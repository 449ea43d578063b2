"""The shared state of one training-daemon run, and the records it keeps about the active job.

Why one plain state object: the daemon's jobs (control flags, child supervision, claiming, job
outcomes, recovery, intake, status) are separate modules of functions that all read and change
the same few fields (the active job, the warm child, paused/stopping). Keeping those fields here,
below every one of those modules, lets each module import only what it uses and keeps the
sibling imports acyclic.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from core.daemon.child import ChildHandle
from core.daemon.registry import Registry
from core.jobqueue.store import QueueStore
from foundation.paths import Paths
from foundation.status_io import utc_now_iso

if TYPE_CHECKING:
    from core.jobqueue.inbox_watcher import InboxTracker
    from trainer.config.schema import Config

LOCK_NAME = "training_daemon"
LOGGER_NAME = "training_daemon"
STATUS_NAME = "training_status"


@dataclass
class ActiveJob:
    """The job the daemon's trainer child is running now."""
    name: str
    record: dict
    job: dict
    child: ChildHandle
    claimed_mono: float
    last_progress: float
    started_at: str
    global_step: int | None = None
    first_step_mono: float | None = None
    paused: bool = False
    stop_sent: bool = False
    stop_deadline: float | None = None
    skip_reason: str | None = None
    kill_reason: str | None = None
    error: dict | None = None
    result: dict | None = None


@dataclass
class DaemonOptions:
    """Knobs that are not config (tests and the CLI set them)."""
    log_to_stderr: bool = True
    install_signals: bool = True
    python: str = sys.executable
    child_env: dict = field(default_factory=dict)


class DaemonContext:
    """Everything one daemon run shares between its loop, its intake thread and its modules."""

    def __init__(self, base_dir: str | os.PathLike | None, options: DaemonOptions | None = None, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.paths = Paths.from_base(base_dir)
        self.opts = options or DaemonOptions()
        self.clock = clock
        self.mono = monotonic
        self.store = QueueStore(self.paths, clock)
        self.status_path = self.paths.status_file(STATUS_NAME)
        self.log = logging.getLogger(LOGGER_NAME)  # the same object once logging_setup configured it
        self.registry = Registry(self.paths.model_db, clock, self.log)
        self.wake = threading.Event()         # the main loop sleeps on it
        self.intake_wake = threading.Event()  # the intake thread sleeps on it
        self.stop_event = threading.Event()   # set when the daemon is exiting (threads stop)
        self.cfg: Config | None = None
        # the job and the trainer processes
        self.active: ActiveJob | None = None
        self.child: ChildHandle | None = None  # the warm child waiting for a job
        self.exiting_children: list[ChildHandle] = []
        self.child_failures = 0
        self.child_backoff_until = 0.0
        # control
        self.paused = False
        self.pause_reason = ""
        self.stopping = False
        self.stop_reason = ""
        self.exit_requested = False
        # status
        self.state = "starting"
        self.last_error: dict | None = None
        self.last_completed: dict | None = None
        self.started_at = utc_now_iso(clock)
        self.start_wall = clock()
        self.last_heartbeat = -1e18
        self.status_dirty = True
        # inbox
        self.tracker: InboxTracker | None = None
        self.observer_kind = "none"
