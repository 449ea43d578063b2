"""The training daemon: drop a ``.jsonl`` into ``inbox/``, it gets validated, queued and trained,
continuously, one global step counter across files and restarts. Nothing is ever lost.
(Command line: ``core.daemon.cli``; status keys: ``core.daemon.status``.)

Processes and threads. The daemon never imports torch: training runs in a trainer child process
(``core/daemon/trainer_child.py``), started *before* a file arrives (warm: imports done), one job
per child, so a crash / OOM / hang of training never takes the daemon down. Threads: the watchdog
observer (inotify on inbox/ and control/), the intake thread (``core.daemon.intake``), the
child's pipe reader, and the main loop below, which sleeps on ``wake`` (an Event) and runs ``tick()``:

  control flags (flag_handler) -> child messages, exits, stalls (supervision) -> claim the next
  file (claim) -> warm child (supervision) -> heartbeat (status).

A job's end (result, failure, retry, quarantine) is ``core.daemon.outcomes``; start-up after a
crash is ``core.daemon.recovery``; the global step counter is ``core.daemon.lineage``.

States (status ``state``): starting -> idle <-> training <-> paused; stopping -> stopped; error
(the trainer child cannot start; retried with back-off).

Crash safety. Every file move is one atomic rename (``core.jobqueue.fs``). A claimed file's job id,
global start step and retry counters live in its job record (``queue/.jobs/``), so after a crash
the file goes back to the head of its queue and the same job resumes from its newest complete
checkpoint. A job that already started is claimed before anything else, so the lineage continues
from that checkpoint before another file trains.

Learning-rate schedule across files: ``training.lr_scheduler`` (default constant_with_warmup)
with warm-up counted on the *global* step, so warm-up happens once per lineage and never
restarts for each new file; cosine/linear decay per file is the documented alternative.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

from core.daemon.claim import maybe_start_next
from core.daemon.context import LOCK_NAME, LOGGER_NAME, DaemonContext, DaemonOptions
from core.daemon.flag_handler import handle_control, request_stop
from core.daemon.intake import intake_loop
from core.daemon.lineage import current_global_step
from core.daemon.recovery import recover
from core.daemon.status import heartbeat, note_error, set_state, write_status
from core.daemon.supervision import (check_active_child, check_stall, drain_messages, ensure_warm_child,
                                     next_timeout, reap_exiting)
from core.jobqueue.inbox_watcher import InboxTracker, start_observer
from foundation.logs import enable_stack_dumps
from foundation.single_instance import SingleInstance
from foundation.status_io import utc_now_iso

LOOP_ERROR_BACKOFF_S = 0.5  # a loop that raises on every tick must not spin


class TrainingDaemon:
    def __init__(self, base_dir: str | os.PathLike | None = None, options: DaemonOptions | None = None, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.ctx = DaemonContext(base_dir, options, clock=clock, monotonic=monotonic)
        self.paths = self.ctx.paths
        self._observer = None
        self._intake_thread: threading.Thread | None = None

    def run(self) -> int:
        """Run until stopped. Raises AlreadyRunning when another daemon holds the lock."""
        ctx = self.ctx
        ctx.paths.ensure()
        lock = SingleInstance(ctx.paths.pids, LOCK_NAME).acquire()
        enable_stack_dumps()  # the anti-stuck monitor's SIGUSR1 asks for our stacks
        try:
            if not self._load_config():
                return 2
            self._start()
            while not ctx.exit_requested:
                ctx.wake.clear()
                try:
                    self.tick()
                except Exception as e:  # noqa: BLE001 - the loop must survive its own bugs
                    ctx.log.exception("daemon loop error")
                    note_error(ctx, "daemon", f"{type(e).__name__}: {e}")
                    ctx.stop_event.wait(LOOP_ERROR_BACKOFF_S)
                if not ctx.exit_requested:
                    ctx.wake.wait(next_timeout(ctx))
            return 0
        finally:
            self._shutdown()
            lock.release()

    def request_stop(self, reason: str) -> None:
        """Checkpoint at the next step boundary, requeue the file, exit 0 (SIGTERM / .stop)."""
        request_stop(self.ctx, reason)

    def lineage_global_step(self) -> int:
        return current_global_step(self.paths)

    def tick(self) -> None:
        ctx = self.ctx
        handle_control(ctx)
        drain_messages(ctx)
        check_active_child(ctx)
        reap_exiting(ctx)
        if ctx.active is None:
            if ctx.stopping:
                ctx.exit_requested = True
                return
            if not ctx.paused:
                maybe_start_next(ctx)
        ensure_warm_child(ctx)
        check_stall(ctx)
        heartbeat(ctx)

    # ------------------------------------------------------------------ start-up and shutdown
    def _load_config(self) -> bool:
        from core.daemon.logging_setup import setup_logging
        from trainer.config.loader import ConfigError, load_config
        ctx = self.ctx
        try:
            ctx.cfg = load_config(base_dir=ctx.paths.base)
        except ConfigError as e:
            ctx.log = setup_logging(ctx.paths.logs, LOGGER_NAME, to_stderr=ctx.opts.log_to_stderr)
            ctx.log.error("cannot start: %s", e)
            write_status(ctx, {"state": "error", "last_error": {"reason": "config", "message": str(e),
                                                                "at": utc_now_iso(ctx.clock)}})
            return False
        ctx.log = setup_logging(ctx.paths.logs, LOGGER_NAME, keep_days=ctx.cfg.daemon.log_keep_days,
                                to_stderr=ctx.opts.log_to_stderr)
        return True

    def _start(self) -> None:
        from trainer.config.loader import config_to_dict
        ctx = self.ctx
        d = ctx.cfg.daemon
        ctx.log.info("training daemon starting (pid %d, base dir %s)", os.getpid(), ctx.paths.base)
        if ctx.opts.install_signals:
            self._install_signals()
        ctx.registry.open(f"{ctx.cfg.model.model_name} daemon {ctx.started_at}", ctx.cfg.model.base_model,
                          config_to_dict(ctx.cfg))
        recover(ctx)
        ctx.tracker = InboxTracker(ctx.paths, stable_seconds=d.file_stable_seconds, clock=ctx.mono)
        self._observer, ctx.observer_kind = start_observer(
            ctx.paths, ctx.tracker, ctx.intake_wake.set, ctx.wake.set,
            polling=d.use_polling_observer, poll_interval=d.poll_interval)
        ctx.log.info("watching %s (%s observer)", ctx.paths.inbox, ctx.observer_kind)
        self._intake_thread = threading.Thread(target=intake_loop, args=(ctx,), name="intake", daemon=True)
        self._intake_thread.start()
        set_state(ctx, "idle")

    def _install_signals(self) -> None:
        def handler(signum, frame):
            self.request_stop(signal.Signals(signum).name)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _shutdown(self) -> None:
        ctx = self.ctx
        ctx.stop_event.set()
        ctx.intake_wake.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # noqa: BLE001
                pass
        if self._intake_thread is not None:
            self._intake_thread.join(timeout=30)
        if ctx.active is not None:  # only when the loop died unexpectedly
            ctx.active.child.kill()
            ctx.active.child.wait(10)
            try:
                ctx.store.requeue(ctx.active.name, head=True)
            except OSError:
                pass
            ctx.active = None
        for ch in [ctx.child, *ctx.exiting_children]:
            if ch is not None:
                ch.close(timeout=3)
        ctx.child = None
        if ctx.cfg is not None:
            ctx.state = "stopped"
            try:
                write_status(ctx, {"state": "stopped", "current_file": None, "priority": None, "job_id": None,
                                   "stopped_at": utc_now_iso(ctx.clock), "stop_reason": ctx.stop_reason,
                                   "trainer_child": None})
            except OSError:
                pass
            ctx.log.info("training daemon stopped (%s)", ctx.stop_reason or "exit")
        ctx.registry.close()
        from core.daemon.logging_setup import close_logging
        close_logging(ctx.log)
