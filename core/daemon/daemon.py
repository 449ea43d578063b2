#!/usr/bin/env python3
"""The training daemon: drop a ``.jsonl`` into ``inbox/``, it gets validated, queued and trained,
continuously, one global step counter across files and restarts. Nothing is ever lost.

    trainctl daemon start [--detach] [--base-dir DIR]      # or: python3 core/training_daemon.py start
    trainctl daemon stop [--timeout S]                      # SIGTERM: checkpoint, requeue, exit 0
    trainctl daemon status [--json]

Processes and threads. The daemon never imports torch: training runs in a trainer child process
(``core/trainer_child.py``), started *before* a file arrives (warm: imports done), one job per
child, so a crash / OOM / hang of training never takes the daemon down. Threads: the watchdog
observer (inotify on inbox/ and control/), the intake loop (completeness, validation, queueing:
``core.jobqueue.inbox_watcher``, ``core.jobqueue.validation``, ``core.jobqueue.store``), the child's pipe reader,
and the main loop below, which sleeps on ``wake`` (an Event) and runs ``tick()``:

  control flags -> child messages -> child exit/stall checks -> claim the next file -> warm child
  -> heartbeat (status/training_status.json, merged with the engine's keys under a lock).

States (status ``state``): starting -> idle <-> training <-> paused; stopping -> stopped; error
(the trainer child cannot start; retried with back-off).

Crash safety. Every file move is one atomic rename (``core.jobqueue.fs``). A claimed file's job id,
global start step and retry counters live in its job record (``queue/.jobs/``), so after a crash
the file goes back to the head of its queue and the same job resumes from its newest complete
checkpoint. A job that already started is claimed before anything else, so the lineage continues
from that checkpoint before another file trains. The success path is idempotent: the record is
marked "finishing" with the result before ``models/current_model/`` is swapped
(``core.daemon.model_swap``, with the lineage's global step inside it), checkpoints registered
and the file moved; a crash anywhere in it is completed on the next start, never trained again.

Status keys this daemon owns in ``status/training_status.json`` (merged with the engine's keys,
see ``trainer/monitoring/status_writer.py``; every write atomic, under a lock):
  pid, daemon_pid       the daemon's PID (``trainer_pid`` is the trainer child's)
  state                 starting | idle | training | paused | stopping | stopped | error
  heartbeat_at          refreshed every ``daemon.heartbeat_interval`` s (stale = daemon dead)
  daemon_started_at     ISO 8601 UTC
  current_file, priority, job_id, queue_file   the file being trained (original name, queue name)
  job_started_at, job_attempt                  this attempt of the job
  queue                 {high, normal, low, processing, failed, recently_completed} counts
  queued_total          files waiting in high+normal+low
  paused, pause_reason, stopping, stop_reason, stopped_at, control_flags
  last_error            {reason, message, file, at} (quarantines, job failures, config errors)
  last_completed        {file, job_id, global_step, at}
  lineage_global_step   the global step of models/current_model/ (its lineage.json)
  daemon_seen_step      the last global step the child reported
  trainer_child         {pid, state: starting|ready|busy|exited} or null
  observer              inotify | polling;  inbox_pending: entries waiting to be complete

Learning-rate schedule across files: ``training.lr_scheduler`` (default constant_with_warmup)
with warm-up counted on the *global* step, so warm-up happens once per lineage and never
restarts for each new file; cosine/linear decay per file is the documented alternative.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

from foundation.atomic_io import atomic_write_json, read_json
from core.daemon.child import ChildHandle, kill_stale_child
from core.daemon.control_flags import active_flags, clear_flag
from core.daemon.model_swap import has_weights, install_model, read_lineage, recover as recover_models
from core.daemon.failure_classifier import classify_exit
from core.jobqueue.inbox_watcher import InboxTracker, start_observer
from foundation.paths import PRIORITIES, REPO_ROOT, Paths
from core.jobqueue.store import RECORD_SUFFIX, QueueStore
from core.jobqueue.validation import check_input
from foundation.single_instance import AlreadyRunning, SingleInstance, read_pid, running_pid
from foundation.status_io import read_status, update_status, utc_now_iso

LOCK_NAME = "training_daemon"
STATUS_NAME = "training_status"
LINEAGE_STATE = "lineage_state.json"
ENGINE_RESET = {"status": "starting", "step_in_file": 0, "file_total_steps": None, "loss": None,
                "eta_seconds": None, "epoch": 0.0, "tokens_per_sec": None, "learning_rate": None}
CHILD_BACKOFF_MAX = 60.0


@dataclass
class ActiveJob:
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


class TrainingDaemon:
    def __init__(self, base_dir: str | os.PathLike | None = None, options: DaemonOptions | None = None, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.paths = Paths.from_base(base_dir)
        self.opts = options or DaemonOptions()
        self.clock = clock
        self.mono = monotonic
        self.store = QueueStore(self.paths, clock)
        self.status_path = self.paths.status_file(STATUS_NAME)
        self.wake = threading.Event()
        self.intake_wake = threading.Event()
        self.stop_event = threading.Event()  # set when the daemon is exiting (threads stop)
        self.log = logging.getLogger("training_daemon")
        self.cfg = None
        self.state = "starting"
        self.active: ActiveJob | None = None
        self.child: ChildHandle | None = None
        self._exiting_children: list[ChildHandle] = []
        self.paused = False
        self.pause_reason = ""
        self.stopping = False
        self.stop_reason = ""
        self.exit_requested = False
        self.last_error: dict | None = None
        self.last_completed: dict | None = None
        self.started_at = utc_now_iso(clock)
        self.start_wall = clock()
        self._last_heartbeat = -1e18
        self._status_dirty = True
        self._child_failures = 0
        self._child_backoff_until = 0.0
        self._observer = None
        self.observer_kind = "none"
        self.tracker: InboxTracker | None = None
        self._intake_thread: threading.Thread | None = None
        self._db = None
        self._run_id: int | None = None
        self._registered: set[str] = set()

    # ================================================================== lifecycle
    def run(self) -> int:
        """Run until stopped. Raises AlreadyRunning when another daemon holds the lock."""
        self.paths.ensure()
        lock = SingleInstance(self.paths.pids, LOCK_NAME).acquire()
        try:
            from core.daemon.logging_setup import setup_logging
            from trainer.config.loader import ConfigError, load_config
            try:
                self.cfg = load_config(base_dir=self.paths.base)
            except ConfigError as e:
                self.log = setup_logging(self.paths.logs, "training_daemon", to_stderr=self.opts.log_to_stderr)
                self.log.error("cannot start: %s", e)
                self._write_status({"state": "error", "last_error": {"reason": "config", "message": str(e),
                                                                      "at": utc_now_iso(self.clock)}})
                return 2
            d = self.cfg.daemon
            self.log = setup_logging(self.paths.logs, "training_daemon", keep_days=d.log_keep_days,
                                     to_stderr=self.opts.log_to_stderr)
            self.log.info("training daemon starting (pid %d, base dir %s)", os.getpid(), self.paths.base)
            if self.opts.install_signals:
                self._install_signals()
            self._open_model_db()
            self._recover()
            self.tracker = InboxTracker(self.paths, stable_seconds=d.file_stable_seconds, clock=self.mono)
            self._observer, self.observer_kind = start_observer(
                self.paths, self.tracker, self.intake_wake.set, self.wake.set,
                polling=d.use_polling_observer, poll_interval=d.poll_interval)
            self.log.info("watching %s (%s observer)", self.paths.inbox, self.observer_kind)
            self._intake_thread = threading.Thread(target=self._intake_loop, name="intake", daemon=True)
            self._intake_thread.start()
            self._set_state("idle")
            while not self.exit_requested:
                self.wake.clear()
                try:
                    self.tick()
                except Exception as e:  # noqa: BLE001 - the loop must survive its own bugs
                    self.log.exception("daemon loop error")
                    self._note_error("daemon", f"{type(e).__name__}: {e}")
                    time.sleep(0.5)
                if not self.exit_requested:
                    self.wake.wait(self._next_timeout())
            return 0
        finally:
            self._shutdown()
            lock.release()

    def request_stop(self, reason: str) -> None:
        """Checkpoint at the next step boundary, requeue the file, exit 0 (SIGTERM / .stop)."""
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self.log.info("stop requested (%s)", reason)
            self._status_dirty = True
        self.wake.set()

    def _install_signals(self) -> None:
        def handler(signum, frame):
            self.request_stop(signal.Signals(signum).name)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _shutdown(self) -> None:
        self.stop_event.set()
        self.intake_wake.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # noqa: BLE001
                pass
        if self._intake_thread is not None:
            self._intake_thread.join(timeout=30)
        if self.active is not None:  # only when the loop died unexpectedly
            self.active.child.kill()
            self.active.child.wait(10)
            try:
                self.store.requeue(self.active.name, head=True)
            except OSError:
                pass
            self.active = None
        for ch in [self.child, *self._exiting_children]:
            if ch is not None:
                ch.close(timeout=3)
        self.child = None
        if self.cfg is not None:
            self.state = "stopped"
            try:
                self._write_status({"state": "stopped", "current_file": None, "priority": None, "job_id": None,
                                    "stopped_at": utc_now_iso(self.clock), "stop_reason": self.stop_reason,
                                    "trainer_child": None})
            except OSError:
                pass
            self.log.info("training daemon stopped (%s)", self.stop_reason or "exit")
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001
                pass
        from core.daemon.logging_setup import close_logging
        close_logging(self.log)

    def _next_timeout(self) -> float:
        d = self.cfg.daemon
        t = min(d.heartbeat_interval, d.poll_interval)
        if self.active is not None and self.active.stop_deadline is not None:
            t = min(t, max(0.05, self.active.stop_deadline - self.mono()))
        if self._child_backoff_until > self.mono():
            t = min(t, max(0.05, self._child_backoff_until - self.mono()))
        return max(0.05, t)

    # ================================================================== main tick
    def tick(self) -> None:
        self._handle_control()
        self._drain_messages()
        self._check_active_child()
        self._reap_exiting()
        if self.active is None:
            if self.stopping:
                self.exit_requested = True
                return
            if not self.paused:
                self._maybe_start_next()
        self._ensure_warm_child()
        self._check_stall()
        self._heartbeat()

    # ------------------------------------------------------------------ control flags
    def _handle_control(self) -> None:
        flags = active_flags(self.paths)
        if "resume" in flags:
            clear_flag(self.paths, "resume")
            clear_flag(self.paths, "pause")
            flags.pop("pause", None)
            if self.paused:
                self.log.info("resume (%s)", flags["resume"].get("reason") or "no reason given")
        want_pause = "pause" in flags
        if want_pause and not self.paused:
            self.paused = True
            self.pause_reason = flags["pause"].get("reason", "")
            self.log.info("pause requested (%s)", self.pause_reason or "no reason given")
            if self.active is not None:
                self.active.child.command("pause")
            self._set_state("paused")
        elif not want_pause and self.paused:
            self.paused = False
            self.pause_reason = ""
            if self.active is not None:
                self.active.child.command("resume")
                self.active.paused = False
                self.active.last_progress = self.mono()
            self._set_state("training" if self.active else "idle")
        for edge in ("stop", "skip"):
            doc = flags.get(edge)
            if doc is None:
                continue
            clear_flag(self.paths, edge)
            if doc.get("_mtime", 0) < self.start_wall - 1.0:
                self.log.warning("ignoring stale control/.%s written before this daemon started", edge)
                continue
            if edge == "stop":
                self.request_stop(f"control/.stop: {doc.get('reason') or 'no reason given'}")
            elif self.active is not None:
                self.active.skip_reason = doc.get("reason") or ""
                self.log.info("skip %s (%s)", self.active.name, self.active.skip_reason or "no reason given")
                self.active.child.command("skip")
            else:
                self.log.info("skip requested but nothing is training; ignored")
        if self.stopping and self.active is not None and not self.active.stop_sent:
            self.active.stop_sent = True
            self.active.stop_deadline = self.mono() + self.cfg.daemon.stop_timeout
            self.active.child.command("stop")
            self._set_state("stopping")

    # ------------------------------------------------------------------ child messages
    def _drain_messages(self) -> None:
        for ch in [c for c in (self.child, self.active.child if self.active else None) if c is not None]:
            while True:
                try:
                    msg = ch.messages.get_nowait()
                except Exception:  # queue.Empty
                    break
                self._on_message(ch, msg)

    def _on_message(self, ch: ChildHandle, msg: dict) -> None:
        t = msg.get("type")
        a = self.active if (self.active is not None and self.active.child is ch) else None
        if t == "ready":
            self.log.info("trainer child %s ready (imports %.1fs)", msg.get("pid"), msg.get("import_s") or 0)
            self._child_failures = 0
            self._status_dirty = True
            if self.state == "error":
                self._set_state("paused" if self.paused else "idle")
        elif a is None:
            return
        elif t in ("step", "heartbeat"):
            a.last_progress = self.mono()
            if msg.get("global_step") is not None:
                a.global_step = int(msg["global_step"])
                if a.first_step_mono is None and t == "step":
                    a.first_step_mono = self.mono()
                    wall = float(msg.get("t") or self.clock())
                    a.record["first_step_wall"] = wall
                    try:
                        self.store.update_record(a.name, first_step_wall=wall)
                    except OSError:
                        pass
                    self.log.info("%s: first optimizer step %.2fs after claim", a.name,
                                  a.first_step_mono - a.claimed_mono)
        elif t == "paused":
            a.paused = True
            a.last_progress = self.mono()
            self.log.info("%s: paused at global step %s (checkpoint written)", a.name, msg.get("global_step"))
            self._status_dirty = True
        elif t == "resumed":
            a.paused = False
            a.last_progress = self.mono()
            self.log.info("%s: resumed", a.name)
        elif t == "result":
            a.result = msg
            self._finish_active()
        elif t == "error":
            a.error = msg

    def _check_active_child(self) -> None:
        a = self.active
        if a is None:
            return
        rc = a.child.poll()
        if a.stop_deadline is not None and rc is None and self.mono() > a.stop_deadline:
            self.log.warning("%s: no checkpoint within stop_timeout; killing the trainer", a.name)
            a.kill_reason = "stop_timeout"
            a.child.kill()
            a.child.wait(10)
            rc = a.child.poll()
        if rc is None:
            return
        a.child.wait_reports(2.0)
        self._drain_messages()
        if self.active is None:  # the result was handled by the drain
            return
        self._finish_active(rc)

    def _check_stall(self) -> None:
        a = self.active
        limit = self.cfg.daemon.stall_timeout
        if a is None or limit <= 0 or a.paused or self.paused or a.kill_reason:
            return
        if self.mono() - a.last_progress > limit:
            self.log.error("%s: no optimizer step for %.0fs; killing the trainer (hang)", a.name, limit)
            a.kill_reason = "hang"
            a.child.kill()

    def _reap_exiting(self) -> None:
        """Children that reported their result exit by themselves; kill one that lingers."""
        keep = []
        for ch in self._exiting_children:
            if ch.poll() is None:
                since = ch.exiting_since or self.mono()
                if self.mono() - since > 30:
                    self.log.warning("trainer child %s did not exit after its result; killing it", ch.pid)
                    ch.kill()
                keep.append(ch)
                continue
            ch._clear_pid_file()
        self._exiting_children = keep

    # ------------------------------------------------------------------ warm child
    def _ensure_warm_child(self) -> None:
        if self.stopping or self.exit_requested or self.active is not None:
            return  # one trainer process at a time: no import competing with a running job
        if self.child is not None:
            rc = self.child.poll()
            if rc is None:
                return
            # The warm child died before it got a job.
            self._drain_messages()
            tail = self.child.stderr_tail(2000)
            self._child_failures += 1
            delay = min(CHILD_BACKOFF_MAX, 2.0 ** min(self._child_failures, 6))
            self._child_backoff_until = self.mono() + delay
            self.log.error("trainer child exited with %s before a job (retry in %.0fs): %s", rc, delay,
                           tail.strip().splitlines()[-1:] if tail.strip() else "")
            if self._child_failures >= 3:
                self._note_error("trainer_child", f"trainer child keeps exiting ({rc}): "
                                 + (tail.strip().splitlines()[-1] if tail.strip() else "no output"))
                self._set_state("error")
            self.child = None
        if not self.cfg.daemon.keep_warm_child and self.store.next_to_claim() is None:
            return
        if self.mono() < self._child_backoff_until:
            return
        if any(ch.poll() is None for ch in self._exiting_children):
            return  # one trainer at a time: the previous one is still exiting
        self.child = ChildHandle(self.paths, wake=self.wake.set, python=self.opts.python,
                                 env=self.opts.child_env, log_keep_days=self.cfg.daemon.log_keep_days).start()
        self.log.info("started warm trainer child pid %d", self.child.pid)
        self._status_dirty = True

    # ------------------------------------------------------------------ claiming
    def _maybe_start_next(self) -> None:
        entry = self.store.next_to_claim()
        if entry is None:
            if self.state not in ("idle", "error"):
                self._set_state("idle")
            return
        if entry.record.get("started") and self._finished_on_disk(entry.record):
            self._complete_from_disk(entry)
            return
        if self.child is None or self.child.state != "ready":
            return
        self._reload_config()
        try:
            path = self.store.claim(entry)
        except FileNotFoundError:
            return  # moved by someone else meanwhile
        except FileExistsError:
            self.log.error("cannot claim %s: a file of that name is already in processing/", entry.name)
            return
        rec = self.store.read_record(entry.name)
        name = path.name
        cfg = self.cfg
        if not rec.get("job_id"):
            stem = name[:-6] if name.endswith(".jsonl") else name
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "job"
            rec["job_id"] = f"{safe}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(self.clock()))}-{os.urandom(2).hex()}"
        if "global_step_start" not in rec:
            rec["global_step_start"] = self._next_global_start()
        if not rec.get("model_path"):
            rec["model_path"] = str(self.paths.current_model) if has_weights(self.paths.current_model) \
                else str(self.paths.resolve(cfg.model.model_path))
        rec.pop("first_step_wall", None)  # measured again for this attempt
        out = self.paths.checkpoints / rec["job_id"]
        rec.update(output_dir=str(out), started=True, phase="running",
                   attempts=int(rec.get("attempts", 0)) + 1, started_at=rec.get("started_at") or utc_now_iso(self.clock))
        rec = self.store.write_record(name, rec)
        from trainer.config.loader import config_to_dict, set_dotted
        cdict = config_to_dict(cfg)
        for k, v in (rec.get("config_overrides") or {}).items():
            set_dotted(cdict, k, v)
        cdict["_base_dir"] = str(self.paths.base)
        job = {"dataset": str(path), "output_dir": str(out), "model_path": rec["model_path"],
               "job_id": rec["job_id"], "config": cdict, "global_step_start": int(rec["global_step_start"]),
               "resume": True, "source_file": rec.get("original_name") or name,
               "priority": rec.get("priority", "normal"), "status_file": str(self.status_path),
               "eval_dir": str(self.paths.resolve(cfg.data.validation_dir))}
        child = self.child
        self.child = None
        now = self.mono()
        self.active = ActiveJob(name=name, record=rec, job=job, child=child, claimed_mono=now, last_progress=now,
                                started_at=utc_now_iso(self.clock))
        if not child.run_job(job):
            self.log.error("could not hand %s to the trainer child; it will be retried", name)
            child.kill()
            return  # _check_active_child sees the exit and requeues
        self._registered = set()
        self.log.info("training %s (priority %s, job %s, attempt %d, global step %s, from %s)", name,
                      rec.get("priority"), rec["job_id"], rec["attempts"], rec["global_step_start"], rec["model_path"])
        self._write_status({**ENGINE_RESET, "current_file": job["source_file"], "queue_file": name,
                            "priority": job["priority"], "job_id": rec["job_id"],
                            "current_step": self._current_step_hint(rec), "job_started_at": self.active.started_at,
                            "job_attempt": rec["attempts"]})
        self._set_state("paused" if self.paused else "training")

    @staticmethod
    def _finished_on_disk(rec: dict) -> bool:
        """The job ran to the end before a crash: its exported final model exists (the engine
        writes ``final/`` by rename only after the last checkpoint of a complete run)."""
        out = rec.get("output_dir")
        return bool(out) and has_weights(Path(out) / "final") and any(Path(out).glob("step-*"))

    def _complete_from_disk(self, entry) -> None:
        """Finish a job that completed before a crash without training it again: the result is
        rebuilt from its newest checkpoint's info (token counts of the lost run are unknown)."""
        try:
            self.store.claim(entry)
        except (FileNotFoundError, FileExistsError):
            return
        rec = self.store.read_record(entry.name)
        out = Path(rec["output_dir"])
        cps = sorted((int(p.name[5:]), p) for p in out.glob("step-*")
                     if p.name[5:].isdigit() and (p / "checkpoint_info.json").is_file())
        last_step, last = cps[-1]
        info = read_json(last / "checkpoint_info.json") or {}
        meta = read_json(out / "job_meta.json") or {}
        start = int(meta.get("global_step_start", rec.get("global_step_start", 0)))
        res = {"ok": True, "job_id": rec.get("job_id"), "global_step_start": start, "global_step_end": last_step,
               "steps": last_step - start, "tokens": None, "train_loss_first": None,
               "train_loss_last": info.get("train_loss"), "validation_loss": info.get("validation_loss"),
               "checkpoints": [str(p) for _, p in cps], "final_model_dir": str(out / "final"),
               "stopped_reason": None, "resumed_from": str(last),
               "metrics": {"completed_before_crash": True}}
        self.log.warning("%s: its job finished before a crash (final model on disk); completing without "
                         "training again", entry.name)
        try:
            self._finish_success(entry.name, rec, res, None)
        except Exception as e:  # noqa: BLE001
            self.log.exception("%s: could not complete from disk", entry.name)
            self._fail(entry.name, rec, {"reason": "other", "kind": "other",
                                         "message": f"could not complete a finished job: {type(e).__name__}: {e}"},
                       res)
        self._write_status(self._queue_status())

    def _current_step_hint(self, rec: dict) -> int:
        meta = read_json(Path(rec["output_dir"]) / "job_meta.json") or {}
        steps = [int(p.name[5:]) for p in Path(rec["output_dir"]).glob("step-*") if p.name[5:].isdigit()]
        return max([int(meta.get("global_step_start", rec["global_step_start"])), *steps])

    def _reload_config(self) -> None:
        from trainer.config.loader import ConfigError, load_config
        try:
            self.cfg = load_config(base_dir=self.paths.base)
        except ConfigError as e:
            self.log.error("config.json is invalid; keeping the previous config: %s", e)
            self._note_error("config", str(e))

    # ------------------------------------------------------------------ lineage
    def _lineage_state(self) -> dict:
        return read_json(self.store.jobs_dir / LINEAGE_STATE) or {}

    def _bump_high_water(self, step: int | None) -> None:
        if step is None:
            return
        st = self._lineage_state()
        if int(step) > int(st.get("high_water", 0)):
            atomic_write_json(self.store.jobs_dir / LINEAGE_STATE, {"high_water": int(step),
                                                                    "updated_at": utc_now_iso(self.clock)})

    def lineage_global_step(self) -> int:
        return int(read_lineage(self.paths.current_model).get("global_step") or 0)

    def _next_global_start(self) -> int:
        """Never reuse a step: the max of the current model's step, the recorded high-water mark
        and every complete checkpoint's step."""
        best = max(self.lineage_global_step(), int(self._lineage_state().get("high_water", 0)))
        try:
            for job_dir in self.paths.checkpoints.iterdir():
                for p in job_dir.glob("step-*"):
                    if p.name[5:].isdigit():
                        best = max(best, int(p.name[5:]))
        except FileNotFoundError:
            pass
        return best

    # ------------------------------------------------------------------ job end
    def _finish_active(self, rc: int | None = None) -> None:
        """Decide what happened to the active job and move its file accordingly."""
        a = self.active
        assert a is not None
        self.active = None
        reuse = (a.result is not None and a.error is None and a.child.poll() is None and not self.stopping
                 and a.child.jobs_done + 1 < self.cfg.daemon.child_max_jobs and self.child is None)
        if reuse:
            self.child = a.child  # it reports "ready" again once it has released the job's memory
            self.child.job_id = None
        elif a.child.poll() is None:
            a.child.exiting_since = self.mono()
            a.child.close_stdin()
            self._exiting_children.append(a.child)
        else:
            a.child._clear_pid_file()
        rec = self.store.read_record(a.name) or a.record
        self._register_checkpoints(rec)
        try:
            if a.result is not None:
                res = a.result["result"]
                self._bump_high_water(res.get("global_step_end"))
                reason = res.get("stopped_reason")
                if reason == "skip":
                    self._fail(a.name, rec, {"reason": "skipped", "kind": "skipped",
                                             "message": f"skipped by request: {a.skip_reason or 'no reason given'}",
                                             "user_reason": a.skip_reason or "",
                                             "global_step": res.get("global_step_end")}, res)
                elif reason in ("stop", "pause"):
                    self._requeue(a.name, "stopped at step boundary; resumes from its checkpoint")
                elif not res.get("ok", True):
                    self._job_failed(a, rec, {"kind": res.get("error_kind") or "other",
                                              "message": res.get("error") or "engine reported failure"})
                else:
                    self._finish_success(a.name, rec, res, a)
            elif a.kill_reason == "stop_timeout" or (self.stopping and a.error is None):
                self._bump_high_water(a.global_step)
                self._requeue(a.name, "daemon stopping; resumes from its last checkpoint")
            elif a.kill_reason == "hang":
                self._job_failed(a, rec, {"kind": "hang", "message":
                                          f"no optimizer step for {self.cfg.daemon.stall_timeout:.0f}s; killed"})
            elif a.error is not None:
                self._job_failed(a, rec, a.error)
            else:
                f = classify_exit(rc if rc is not None else a.child.poll(), a.child.stderr_tail())
                self._job_failed(a, rec, {"kind": f.kind, "message": f.message})
        except Exception as e:  # noqa: BLE001 - bookkeeping must not kill the daemon
            self.log.exception("%s: error while finishing the job", a.name)
            self._note_error("finish", f"{a.name}: {type(e).__name__}: {e}")
            if (self.paths.processing / a.name).exists():
                try:
                    self._fail(a.name, rec, {"reason": "other", "kind": "other",
                                             "message": f"error while finishing: {type(e).__name__}: {e}",
                                             "traceback": traceback.format_exc()[-4000:]}, None)
                except Exception:  # noqa: BLE001
                    self.log.exception("could not quarantine %s", a.name)
        self._write_status({**self._queue_status(), "current_file": None, "queue_file": None, "priority": None,
                            "job_id": None})
        self._set_state("stopping" if self.stopping else ("paused" if self.paused else "idle"))
        self.wake.set()

    def _job_failed(self, a: ActiveJob, rec: dict, err: dict) -> None:
        kind = err.get("kind") or "other"
        self._bump_high_water(err.get("global_step") or a.global_step)
        d = self.cfg.daemon
        overrides = dict(rec.get("config_overrides") or {})
        if kind == "oom":
            bs = int(overrides.get("training.per_device_batch_size", self.cfg.training.per_device_batch_size))
            ga = int(overrides.get("training.gradient_accumulation_steps",
                                   self.cfg.training.gradient_accumulation_steps))
            if int(rec.get("oom_retries", 0)) < d.oom_max_retries and bs > 1:
                overrides.update({"training.per_device_batch_size": max(1, bs // 2),
                                  "training.gradient_accumulation_steps": ga * 2})
                self.store.update_record(a.name, config_overrides=overrides,
                                         oom_retries=int(rec.get("oom_retries", 0)) + 1)
                self._requeue(a.name, f"out of memory: retrying with per_device_batch_size {max(1, bs // 2)}, "
                                      f"gradient_accumulation_steps {ga * 2}")
                return
        if kind == "killed" and not self.stopping and int(rec.get("restarts", 0)) < d.max_job_restarts:
            self.store.update_record(a.name, restarts=int(rec.get("restarts", 0)) + 1)
            self._requeue(a.name, f"{err.get('message')}; resuming from its last checkpoint "
                                  f"(restart {int(rec.get('restarts', 0)) + 1}/{d.max_job_restarts})")
            return
        doc = {"reason": kind, "kind": kind, "message": err.get("message") or kind,
               "global_step": err.get("global_step") or a.global_step}
        if err.get("traceback"):
            doc["traceback"] = str(err["traceback"])[-4000:]
        report = err.get("report")
        if isinstance(report, dict):
            errs = [e for e in report.get("errors", [])][:50]
            doc["errors"] = errs
            doc["line_numbers"] = sorted({int(e["line"]) for e in errs if isinstance(e, dict) and e.get("line")})
            doc["report"] = {k: v for k, v in report.items() if k not in ("errors", "warnings")}
        self._fail(a.name, rec, doc, None)

    def _requeue(self, name: str, why: str) -> None:
        rec = self.store.read_record(name)
        dst = self.store.requeue(name, head=True)
        self.log.info("%s back at the head of queue/%s: %s", name, rec.get("priority", "normal"), why)
        return dst

    def _fail(self, name: str, rec: dict, error: dict, result: dict | None) -> None:
        src = self.paths.processing / name
        doc = {**error, "job_id": rec.get("job_id"), "priority": rec.get("priority", "normal"),
               "original_name": rec.get("original_name") or name, "attempts": rec.get("attempts", 0),
               "restarts": rec.get("restarts", 0), "oom_retries": rec.get("oom_retries", 0),
               "config_overrides": rec.get("config_overrides") or {}, "checkpoints_dir": rec.get("output_dir"),
               "enqueued_at": rec.get("enqueued_at"), "started_at": rec.get("started_at"), "source": "training"}
        dst = self.store.fail(src, doc)
        self.store.delete_record(name)
        self.log.warning("%s -> queue/failed/%s: %s: %s", name, dst.name, doc.get("reason"), doc.get("message"))
        self._note_error(doc.get("reason", "other"), doc.get("message", ""), file=dst.name)
        self._db_record_file(rec, doc.get("reason", "failed"), result or {}, doc)

    def _finish_success(self, name: str, rec: dict, res: dict, a: ActiveJob | None) -> None:
        """Idempotent: may be re-entered after a crash with phase == "finishing"."""
        if rec.get("phase") != "finishing":
            rec.update(phase="finishing", result=res,
                       completed_name=self.store.choose_name("recently_completed", name, "result"),
                       finished_at=utc_now_iso(self.clock))
            if a is not None and a.first_step_mono is not None:
                rec["first_step_latency_s"] = round(a.first_step_mono - a.claimed_mono, 3)
            rec = self.store.write_record(name, rec)
        final = res.get("final_model_dir") or ""
        lineage = {"global_step": int(res.get("global_step_end") or 0), "job_id": rec.get("job_id"),
                   "source_file": rec.get("original_name") or name, "model_name": self.cfg.model.model_name,
                   "base_model": self.cfg.model.base_model, "method": self.cfg.training.method,
                   "checkpoint": (res.get("checkpoints") or [None])[-1]}
        cur = read_lineage(self.paths.current_model)
        if cur.get("job_id") != rec.get("job_id"):
            if not final or not Path(final).is_dir():
                raise RuntimeError(f"job {rec.get('job_id')} reported success but its final model "
                                   f"{final or '(none)'} does not exist")
            install_model(self.paths, final, lineage)
            self.log.info("models/current_model <- %s (global step %d)", final, lineage["global_step"])
        self._bump_high_water(lineage["global_step"])
        self._register_checkpoints(rec, res)
        detected = rec.get("detected_at")
        doc = {"schema_version": 1, "status": "completed", "original_name": rec.get("original_name") or name,
               "job_id": rec.get("job_id"), "priority": rec.get("priority"),
               "steps": res.get("steps"), "global_step_start": res.get("global_step_start"),
               "global_step_end": res.get("global_step_end"), "tokens": res.get("tokens"),
               "train_loss_first": res.get("train_loss_first"), "train_loss_last": res.get("train_loss_last"),
               "validation_loss": res.get("validation_loss"), "duration_s": res.get("duration_s"),
               "tokens_per_sec": res.get("tokens_per_sec"),
               "checkpoint": (res.get("checkpoints") or [None])[-1], "checkpoints": res.get("checkpoints") or [],
               "final_model_dir": final, "current_model": str(self.paths.current_model),
               "resumed_from": res.get("resumed_from"), "attempts": rec.get("attempts"),
               "restarts": rec.get("restarts", 0), "oom_retries": rec.get("oom_retries", 0),
               "config_overrides": rec.get("config_overrides") or {}, "enqueued_at": rec.get("enqueued_at"),
               "started_at": rec.get("started_at"), "finished_at": rec.get("finished_at"),
               "first_step_latency_s": rec.get("first_step_latency_s"),
               "first_step_wall": rec.get("first_step_wall"), "detected_at": detected,
               "drop_to_first_step_s": (round(rec["first_step_wall"] - detected, 3)
                                        if detected and rec.get("first_step_wall") else None),
               "validation": rec.get("validation"), "metrics": res.get("metrics") or {}}
        src = self.paths.processing / name
        dst = self.store.complete(src, doc, name=rec.get("completed_name"))
        self.store.delete_record(name)
        self._db_record_file(rec, "completed", res, None)
        self.last_completed = {"file": dst.name, "job_id": rec.get("job_id"),
                               "global_step": res.get("global_step_end"), "at": utc_now_iso(self.clock)}
        self.log.info("%s -> queue/recently_completed/%s (steps %s, global step %s, loss %s)", name, dst.name,
                      res.get("steps"), res.get("global_step_end"), res.get("train_loss_last"))

    # ------------------------------------------------------------------ model_db
    def _open_model_db(self) -> None:
        try:
            from foundation.model_db import ModelDB
        except ImportError:
            self.log.warning("foundation.model_db not available; checkpoints are not registered")
            return
        try:
            self._db = ModelDB(self.paths.model_db)
            from trainer.config.loader import config_to_dict
            self._run_id = self._db.start_run(f"{self.cfg.model.model_name} daemon {self.started_at}",
                                              self.cfg.model.base_model, config_to_dict(self.cfg))
        except Exception as e:  # noqa: BLE001
            self.log.error("model_db unavailable: %s", e)
            self._db = None

    def _register_checkpoints(self, rec: dict, res: dict | None = None) -> None:
        if self._db is None or not rec.get("output_dir"):
            return
        for p in sorted(Path(rec["output_dir"]).glob("step-*")):
            info_path = p / "checkpoint_info.json"
            if str(p) in self._registered or not info_path.is_file():
                continue
            info = read_json(info_path) or {}
            try:
                self._db.register_checkpoint(p, int(info.get("global_step", p.name[5:])), info.get("job_id"),
                                             info.get("source_file"), info.get("train_loss"),
                                             info.get("validation_loss"), info.get("created_at"), self._run_id)
                self._registered.add(str(p))
            except Exception as e:  # noqa: BLE001
                self.log.error("model_db: cannot register %s: %s", p, e)

    def _db_record_file(self, rec: dict, status: str, res: dict, err: dict | None) -> None:
        if self._db is None:
            return
        try:
            self._db.record_file(self._run_id, rec.get("original_name") or rec.get("name", ""), rec.get("job_id"),
                                 status, res.get("steps"), res.get("tokens"), rec.get("started_at"),
                                 utc_now_iso(self.clock), {**res, **({"error": err} if err else {})})
        except Exception as e:  # noqa: BLE001
            self.log.error("model_db: cannot record file: %s", e)

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        stale = kill_stale_child(self.paths)
        if stale:
            self.log.warning("killed a trainer child left by a previous daemon (pid %d)", stale)
        for line in recover_models(self.paths):
            self.log.warning("model recovery: %s", line)
        for name in self.store.data_names("processing"):
            rec = self.store.read_record(name)
            try:
                if rec.get("phase") == "finishing" and rec.get("result"):
                    self.log.warning("%s: completing the bookkeeping of a finished job after a crash", name)
                    self._finish_success(name, rec, rec["result"], None)
                else:
                    self._requeue(name, "recovered after a crash; resumes from its last checkpoint")
            except Exception as e:  # noqa: BLE001
                self.log.exception("recovery of %s failed", name)
                self._note_error("recovery", f"{name}: {type(e).__name__}: {e}")
        # Records whose file is no longer in an active folder are leftovers of a crash mid-move.
        for rp in self.store.jobs_dir.glob("*" + RECORD_SUFFIX):
            name = rp.name[: -len(RECORD_SUFFIX)]
            if self.store.find(name, (*PRIORITIES, "processing")) is None:
                rp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ intake
    def _intake_loop(self) -> None:
        d = self.cfg.daemon
        last_scan = -1e18
        while not self.stop_event.is_set():
            now = self.mono()
            if now - last_scan >= d.poll_interval:
                self.tracker.scan()
                last_scan = now
            for ent in self.tracker.ready():
                if self.stop_event.is_set():
                    break
                self._take_inbox_entry(ent)
            nd = self.tracker.next_deadline()
            timeout = d.poll_interval if nd is None else min(d.poll_interval, max(0.02, nd))
            self.intake_wake.wait(timeout)
            self.intake_wake.clear()

    def _take_inbox_entry(self, ent) -> None:
        p = ent.path
        try:
            before = os.lstat(p)
        except FileNotFoundError:
            self.tracker.forget(p)
            return
        detected_wall = self.clock() - max(0.0, self.mono() - ent.first_seen)
        try:
            verdict = check_input(p, self.paths, self.cfg)
            try:
                after = os.lstat(p)
            except FileNotFoundError:
                self.tracker.forget(p)
                return
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                self.tracker.on_event(p)  # still being written: look again later
                return
            self.tracker.forget(p)
            if verdict.ok:
                dst = self.store.enqueue(p, ent.priority, source="inbox", original_name=p.name,
                                         extra={"detected_at": detected_wall,
                                                "validation": {"n_examples": verdict.n_examples,
                                                               "warnings": (verdict.report or {}).get("warning_counts")}})
                self.log.info("queued %s -> queue/%s/%s (%d examples)", p.name, ent.priority, dst.name,
                              verdict.n_examples)
            else:
                err = {**verdict.to_error(), "priority": ent.priority, "source": "inbox",
                       "original_path": str(p.relative_to(self.paths.base)) if str(p).startswith(str(self.paths.base)) else str(p)}
                if verdict.report is not None:
                    err["report"] = {k: v for k, v in verdict.report.items() if k not in ("errors", "warnings")}
                dst = self.store.fail(p, err)
                self.log.warning("rejected %s -> queue/failed/%s: %s", p.name, dst.name, verdict.message)
                self._note_error(verdict.reason, verdict.message, file=dst.name)
        except FileNotFoundError:
            self.tracker.forget(p)
            return
        except Exception as e:  # noqa: BLE001 - one bad entry must not stop the intake
            self.log.exception("intake of %s failed", p)
            self._note_error("intake", f"{p.name}: {type(e).__name__}: {e}")
            self.tracker.forget(p)
            return
        self._status_dirty = True
        self.wake.set()

    # ------------------------------------------------------------------ status
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._status_dirty = True
            self._heartbeat(force=True)

    def _note_error(self, reason: str, message: str, file: str | None = None) -> None:
        self.last_error = {"reason": reason, "message": message[:2000], "file": file, "at": utc_now_iso(self.clock)}
        self._status_dirty = True

    def _queue_status(self) -> dict:
        counts = self.store.counts()
        return {"queue": {k: counts[k] for k in (*PRIORITIES, "processing", "failed", "recently_completed")},
                "queued_total": sum(counts[p] for p in PRIORITIES)}

    def _write_status(self, patch: dict) -> None:
        base = {"pid": os.getpid(), "daemon_pid": os.getpid(), "state": self.state,
                "daemon_started_at": self.started_at}
        base.update(patch)
        try:
            update_status(self.status_path, base, daemon=True, clock=self.clock)
        except OSError as e:
            self.log.error("cannot write status: %s", e)

    def _heartbeat(self, force: bool = False) -> None:
        now = self.mono()
        if not force and not self._status_dirty and now - self._last_heartbeat < self.cfg.daemon.heartbeat_interval:
            return
        self._last_heartbeat = now
        self._status_dirty = False
        a = self.active
        if a is not None:
            self._register_checkpoints(a.record)
        ch = a.child if a is not None else self.child
        patch = {**self._queue_status(), "state": self.state, "paused": self.paused,
                 "pause_reason": self.pause_reason or None, "stopping": self.stopping,
                 "last_error": self.last_error, "last_completed": self.last_completed,
                 "lineage_global_step": self.lineage_global_step(),
                 "trainer_child": {"pid": ch.pid, "state": ch.state} if ch is not None else None,
                 "observer": self.observer_kind,
                 "inbox_pending": self.tracker.pending_count() if self.tracker else 0,
                 "control_flags": sorted(active_flags(self.paths))}
        if a is not None:
            patch.update(current_file=a.job["source_file"], queue_file=a.name, priority=a.job["priority"],
                         job_id=a.job["job_id"], daemon_seen_step=a.global_step)
        self._write_status(patch)


# ====================================================================== CLI
def _base_opt(f):
    return click.option("--base-dir", default=None, help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")(f)


@click.group("daemon", context_settings={"help_option_names": ["-h", "--help"]})
def daemon_group() -> None:
    """Run and control the training daemon (inbox -> queue -> training)."""


@daemon_group.command("start")
@_base_opt
@click.option("--detach", is_flag=True, help="Run in the background (PID in .pids/training_daemon.pid).")
@click.option("--quiet", is_flag=True, help="Foreground: log to logs/ only, not to stderr.")
def start_command(base_dir: str | None, detach: bool, quiet: bool) -> None:
    """Start the daemon (foreground unless --detach). A second daemon exits 1 naming the running PID."""
    paths = Paths.from_base(base_dir).ensure()
    if detach:
        _start_detached(paths)
        return
    daemon = TrainingDaemon(paths.base, DaemonOptions(log_to_stderr=not quiet))
    try:
        code = daemon.run()
    except AlreadyRunning as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sys.exit(code)


def _start_detached(paths: Paths) -> None:
    pid = running_pid(paths.pids, LOCK_NAME)
    if pid:
        click.echo(f"error: training daemon is already running (pid {pid})", err=True)
        sys.exit(1)
    out = open(paths.logs / "training_daemon.out", "ab")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "core" / "training_daemon.py"), "start", "--base-dir", str(paths.base),
                             "--quiet"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
    out.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            click.echo(f"error: training daemon exited with status {proc.returncode}; see "
                       f"{paths.logs / 'training_daemon.out'}", err=True)
            sys.exit(1)
        if running_pid(paths.pids, LOCK_NAME) == proc.pid:
            click.echo(f"training daemon started (pid {proc.pid}); logs: {paths.logs / 'training_daemon.log'}")
            return
        time.sleep(0.1)
    click.echo(f"training daemon started (pid {proc.pid}) but has not taken its lock yet", err=True)


@daemon_group.command("stop")
@_base_opt
@click.option("--timeout", default=330.0, show_default=True, help="Seconds to wait for a clean exit.")
@click.option("--kill", "kill_after", is_flag=True, help="SIGKILL the daemon if it has not exited by --timeout.")
def stop_command(base_dir: str | None, timeout: float, kill_after: bool) -> None:
    """SIGTERM the daemon: it checkpoints at the next step boundary, requeues the file, exits 0."""
    paths = Paths.from_base(base_dir)
    pid = running_pid(paths.pids, LOCK_NAME)
    if not pid:
        click.echo("training daemon is not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(paths.pids, LOCK_NAME) is None:
            click.echo(f"training daemon (pid {pid}) stopped")
            return
        time.sleep(0.2)
    if kill_after:
        os.kill(pid, signal.SIGKILL)
        click.echo(f"training daemon (pid {pid}) did not stop in {timeout:.0f}s; killed")
        return
    click.echo(f"error: training daemon (pid {pid}) still running after {timeout:.0f}s", err=True)
    sys.exit(1)


@daemon_group.command("status")
@_base_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(base_dir: str | None, as_json: bool) -> None:
    """Is the daemon running, and what is it doing?"""
    paths = Paths.from_base(base_dir)
    pid = running_pid(paths.pids, LOCK_NAME)
    st = read_status(paths.status_file(STATUS_NAME)) or {}
    doc = {"running": pid is not None, "pid": pid, "state": st.get("state") if pid else "stopped",
           "current_file": st.get("current_file") if pid else None, "heartbeat_at": st.get("heartbeat_at"),
           "queue": st.get("queue"), "last_error": st.get("last_error")}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    if not pid:
        click.echo("training daemon: not running" + (f" (last pid {read_pid(paths.pids / 'training_daemon.pid')})"
                                                     if read_pid(paths.pids / "training_daemon.pid") else ""))
        return
    click.echo(f"training daemon: running (pid {pid}), state {doc['state']}"
               + (f", training {doc['current_file']}" if doc["current_file"] else ""))

