"""Automated tests: every new complete checkpoint is scored on the fixed validation suite.

This module is the daemon loop (discover -> evaluate pending -> publish). The steps live beside it:
``checkpoints`` (discovery), ``loading`` (model, tokenizer, profile), ``generate`` (generation and
its stop rule), ``confidence``, ``validation_loss``, ``scoring`` (exact match, registry record),
``local_mode`` (one local evaluation) and ``server_mode`` (scoring through the inference server).

What one evaluation does (``evaluate_checkpoint``), in its own process, on CPU or a chosen device:

1. loads the checkpoint (``checkpoint_info.json``'s ``model_dir``: "." or "merged" for LoRA) and its
   tokenizer (the base model's when the checkpoint has none);
2. renders each suite item for the active profile (the profile recorded in the checkpoint's info,
   else config ``profile.name``): ``syllo.puzzles.rerender_record`` then ``profile.prepare_messages``
   with the profile's system prompt, and the chat template with a generation prompt;
3. generates greedily (``evaluation.max_new_tokens``), batched, under the profile's logits
   processors, stopping at EOS or at one of the profile's stop sequences;
4. scores exact match: ``profile.normalize_answer(profile.extract_answer(text))`` against
   ``profile.normalize_answer(expected)``; accuracy overall and by difficulty, and every failure
   (prompt, expected, got);
5. computes each answer's confidence from the model's own (unprocessed) token probabilities: the
   probability of the generated tokens up to the one that completes the extracted answer (all
   generated tokens when no answer was extracted); ``confidence_calibrator.calibrate`` bins them;
6. computes the suite validation loss: the profile's ``transform_example`` (as in training), the
   data layer's ``tokenize_example`` (labels on assistant tokens), one forward pass; the loss is the
   token-weighted mean cross entropy over every labelled token of the suite.

Results go to the model registry (``record_evaluation``) and ``status/automated_testing.json``;
after each evaluation the regression monitor, the comparison engine and the calibrator refresh
their status files (same process, so one daemon keeps all four current).

Mode ``server`` (config ``evaluation.mode``) scores whatever the inference server serves through
``monitoring.prediction_client.PredictionClient`` (accuracy only: no loss, no confidences), and
records it against the checkpoint the server reports.

Discovery: complete checkpoints are folders ``models/checkpoints/<job>/step-<N>/`` holding
``checkpoint_info.json`` with ``"complete": true`` (a folder without it is being written: ignored);
they are registered in the model registry (idempotent) and every registered checkpoint without an
evaluation on the current suite version whose folder still exists is evaluated, newest first. In
local mode, a checkpoint whose newest evaluation loaded another dtype (``inference.precision``
changed, or a record from before the dtype was kept) is evaluated again, after those, newest first:
rankings then compare scores of the numbers the server serves.

``status/automated_testing.json`` (rewritten on every change and every
``monitoring.status_interval`` seconds as a heartbeat; all fields always present):

* ``schema_version``, ``updated_at``, ``pid``, ``heartbeat_at``
* ``state``: ``starting`` | ``idle`` | ``evaluating`` | ``stopped`` | ``error``
* ``mode`` (local | server), ``device``, ``dtype`` (local mode: what checkpoints load in; null in
  server mode), ``profile``, ``interval``, ``started_at``
* ``cpu_share``: local mode: ``{torch_threads, nice}`` in effect (``evaluation.num_threads``, ``evaluation.nice``)
* ``suite_version`` (e.g. "syllo-v1"), ``suite_dir``, ``n_suite_items`` (items scored per checkpoint)
* ``current``: null or ``{checkpoint, global_step, started_at}``
* ``pending``: checkpoint paths waiting, newest first; ``n_pending``
* ``evaluated_total``: evaluations done by this process
* ``last_result``: null or ``{checkpoint, global_step, accuracy, n_items, n_correct, by_difficulty
  ({level: {accuracy, n, correct}}), validation_loss, ece, duration_s, evaluated_at, n_failures,
  failures (first 20: {index, id, difficulty, prompt, expected, got})}``
* ``recent``: newest first (max 20) ``{checkpoint, global_step, accuracy, validation_loss, ece, evaluated_at}``
* ``errors``: newest last (max 20) ``{checkpoint, error, at}``

Checkpoint paths are relative to the base dir when inside it. Single instance per base dir
(``.pids/automated_testing.lock``/``.pid``); SIGTERM/SIGINT stop it after the current evaluation.

    python3 monitoring/automated_testing_daemon.py [--base-dir DIR] [--once]
    trainctl eval daemon [--once]
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from foundation.logs import enable_stack_dumps
from foundation.paths import Paths
from foundation.status_io import utc_now_iso, write_status
from monitoring.evaluation.checkpoints import discover_checkpoints, is_model_folder
from monitoring.evaluation.local_mode import evaluate_checkpoint, evaluation_dtype
from monitoring.evaluation.scoring import record_result
from monitoring.evaluation.server_mode import evaluate_via_server, make_client, served_checkpoint

STATUS_NAME = "automated_testing.json"
INSTANCE_NAME = "automated_testing"
MAX_FAILURES_IN_STATUS = 20
MAX_RECENT = 20
MAX_ATTEMPTS = 3

# =========================================================================== daemon
class StatusKeeper:
    """Holds the status document; writes it atomically on change and as a heartbeat."""

    def __init__(self, path: Path, interval: float, clock: Callable[[], float] | None = None):
        self.path, self.interval, self.clock = path, interval, clock
        self.doc: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set(self, **fields: Any) -> None:
        with self._lock:
            self.doc.update(fields)
            write_status(self.path, dict(self.doc), daemon=True, clock=self.clock)

    def beat(self) -> None:
        with self._lock:
            write_status(self.path, dict(self.doc), daemon=True, clock=self.clock)

    def start(self, stop_event: threading.Event) -> None:
        def loop() -> None:
            while not stop_event.wait(self.interval):
                try:
                    self.beat()
                except OSError:
                    pass
        self._thread = threading.Thread(target=loop, name="status-heartbeat", daemon=True)
        self._thread.start()


def refresh_reports(base_dir, cfg, suite_version: str) -> None:
    """Regression first, then the comparison (it marks flagged entries), then calibration."""
    from monitoring.evaluation import calibration, comparison, regression
    regression.run_once(base_dir, cfg, suite_version)
    comparison.run_once(base_dir, cfg, suite_version)
    calibration.run_once(base_dir, suite_version)


class AutomatedTester:
    """The daemon: discover -> evaluate pending -> publish, every ``evaluation.interval`` seconds."""

    def __init__(self, base_dir=None, config=None, *, stop_event: threading.Event | None = None,
                 clock: Callable[[], float] | None = None, client=None):
        from foundation.model_db import ModelDB
        from syllo.suite import load_suite, resolve_suite_dir
        from trainer.config.loader import load_config
        self.paths = Paths.from_base(base_dir)
        self.cfg = config if config is not None else load_config(base_dir=self.paths.base)
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.db = ModelDB(self.paths.model_db, base_dir=self.paths.base)
        suite_dir = resolve_suite_dir(self.paths.base, self.cfg.data.validation_dir)
        self.suite = load_suite(suite_dir, max_items=self.cfg.evaluation.max_items)
        self.attempts: dict[str, int] = {}
        self.client = client
        ev = self.cfg.evaluation
        self.dtype = self._local_dtype() if ev.mode == "local" else None
        self.status = StatusKeeper(self.paths.status_file(STATUS_NAME), self.cfg.monitoring.status_interval, clock)
        self.status.doc.update({
            "state": "starting", "mode": ev.mode, "device": ev.device if ev.mode == "local" else "server",
            "dtype": self.dtype, "profile": self.cfg.profile.name, "interval": ev.interval, "started_at": utc_now_iso(clock),
            "suite_version": self.suite.version, "suite_dir": str(self.suite.dir),
            "n_suite_items": len(self.suite.items), "current": None, "pending": [], "n_pending": 0,
            "evaluated_total": 0, "last_result": None, "recent": [], "errors": [],
        })

    def _local_dtype(self) -> str | None:
        try:
            return evaluation_dtype(self.cfg)
        except ValueError:  # an unusable evaluation.device: each evaluation reports it as its error
            return None

    # ------------------------------------------------------------------ one pass
    def pending(self) -> list[dict]:
        """Checkpoints to evaluate, newest first: those with no evaluation on the suite, then (local
        mode) those whose newest evaluation loaded another dtype than this evaluator does, so that
        after an ``inference.precision`` change every kept checkpoint is scored as it is now served
        and rankings compare like with like."""
        todo = self.db.unevaluated_checkpoints(self.suite.version, order="-global_step")
        if self.dtype is not None:
            todo += self.db.checkpoints_evaluated_in_other_dtype(self.suite.version, "local", self.dtype,
                                                                 order="-global_step")
        out = []
        for c in todo:
            if self.attempts.get(c["path"], 0) >= MAX_ATTEMPTS:
                continue
            if not is_model_folder(Path(c["abs_path"])):
                continue  # pruned by training, or not a model folder
            out.append(c)
        return out

    def run_once(self) -> int:
        """Discover, evaluate everything pending (newest first, discovering again after each one),
        publish. Returns evaluations done."""
        if self.cfg.evaluation.mode == "server":
            return self._run_once_server()
        done = 0
        tried: set[str] = set()
        while not self.stop_event.is_set():
            # Discover again after every evaluation: a checkpoint written meanwhile is newer than
            # anything left, and the newest is what deployment and the curriculum wait for.
            discover_checkpoints(self.paths, self.db)
            todo = [c for c in self.pending() if c["path"] not in tried]
            self.status.set(state="idle" if not todo else "evaluating", pending=[c["path"] for c in todo],
                            n_pending=len(todo))
            if not todo:
                break
            tried.add(todo[0]["path"])  # each checkpoint at most once per pass: the pass ends
            if self._evaluate_one(todo[0], remaining=[x["path"] for x in todo[1:]]):
                done += 1
        self.status.set(state="idle", current=None, pending=[], n_pending=0)
        return done

    def _evaluate_one(self, c: dict, remaining: list[str]) -> bool:
        path = c["path"]
        started = utc_now_iso(self.clock)
        self.status.set(state="evaluating", current={"checkpoint": path, "global_step": c["global_step"],
                                                     "started_at": started},
                        pending=remaining, n_pending=len(remaining))
        try:
            res = evaluate_checkpoint(c["abs_path"], self.suite, self.cfg, base_dir=self.paths.base)
            record_result(self.db, path, self.suite, res)
        except Exception as e:  # one bad checkpoint must not stop the daemon
            if not is_model_folder(Path(c["abs_path"])):
                self.status.set(current=None)  # pruned by training while we loaded it: not an error
                return False
            self.attempts[path] = self.attempts.get(path, 0) + 1
            err = {"checkpoint": path, "error": f"{type(e).__name__}: {e}", "at": utc_now_iso(self.clock),
                   "attempt": self.attempts[path]}
            self.status.set(errors=(self.status.doc["errors"] + [err])[-MAX_RECENT:], current=None)
            print(f"[automated_testing] {path}: {err['error']}\n{traceback.format_exc()}", file=sys.stderr)
            return False
        self._publish(path, c["global_step"], res)
        return True

    def _publish(self, path: str, step: int, res: dict) -> None:
        cal = res.get("calibration") or {}
        last = {"checkpoint": path, "global_step": step, "accuracy": res["accuracy"], "n_items": res["n_items"],
                "n_correct": res["n_correct"], "by_difficulty": res["by_difficulty"],
                "validation_loss": res.get("validation_loss"), "ece": cal.get("ece"),
                "duration_s": res.get("duration_s"), "evaluated_at": utc_now_iso(self.clock),
                "n_failures": len(res["failures"]),
                "failures": [{k: f[k] for k in ("index", "id", "difficulty", "prompt", "expected", "got")}
                             for f in res["failures"][:MAX_FAILURES_IN_STATUS]]}
        summary = {k: last[k] for k in ("checkpoint", "global_step", "accuracy", "validation_loss", "ece",
                                        "evaluated_at")}
        try:
            refresh_reports(self.paths.base, self.cfg, self.suite.version)
        except Exception as e:
            err = {"checkpoint": path, "error": f"reports: {type(e).__name__}: {e}", "at": utc_now_iso(self.clock)}
            self.status.doc["errors"] = (self.status.doc["errors"] + [err])[-MAX_RECENT:]
        self.status.set(last_result=last, recent=([summary] + self.status.doc["recent"])[:MAX_RECENT],
                        evaluated_total=self.status.doc["evaluated_total"] + 1, current=None)

    def _run_once_server(self) -> int:
        if self.client is None:
            self.client = make_client(self.cfg, self.paths.base)
        client = self.client
        info = client.info()
        info = info if isinstance(info, dict) else {}
        ck = served_checkpoint(self.paths, info)
        if ck is None:
            self.status.set(state="idle", current=None)
            return 0
        path, step = ck
        self.db.register_checkpoint(path, step, info.get("job_id"), info.get("source_file"))
        if any(e["suite_version"] == self.suite.version for e in self.db.evaluations_for(path, with_details=False)):
            self.status.set(state="idle", current=None)
            return 0
        rel = self.db.rel(path)
        self.status.set(state="evaluating", current={"checkpoint": rel, "global_step": step,
                                                     "started_at": utc_now_iso(self.clock)})
        try:
            res = evaluate_via_server(client, self.suite, self.cfg, info.get("profile") or None)
            record_result(self.db, path, self.suite, res)
        except Exception as e:
            err = {"checkpoint": rel, "error": f"{type(e).__name__}: {e}", "at": utc_now_iso(self.clock)}
            self.status.set(state="idle", errors=(self.status.doc["errors"] + [err])[-MAX_RECENT:], current=None)
            return 0
        self._publish(rel, step, res)
        self.status.set(state="idle")
        return 1

    # ------------------------------------------------------------------ loop
    def run(self, once: bool = False) -> None:
        enable_stack_dumps()  # the anti-stuck monitor's SIGUSR1 asks for our stacks
        if self.cfg.evaluation.mode == "local":
            from foundation.cpu_share import apply_cpu_share
            ev = self.cfg.evaluation
            self.status.doc["cpu_share"] = apply_cpu_share(ev.num_threads, ev.nice)
        self.status.set(state="idle")
        self.status.start(self.stop_event)
        if self.db.latest_evaluations(self.suite.version):
            try:  # thresholds or weights may have changed since the last run
                refresh_reports(self.paths.base, self.cfg, self.suite.version)
            except Exception as e:
                print(f"[automated_testing] reports: {type(e).__name__}: {e}", file=sys.stderr)
        try:
            while not self.stop_event.is_set():
                try:
                    self.run_once()
                except Exception as e:
                    err = {"checkpoint": None, "error": f"{type(e).__name__}: {e}", "at": utc_now_iso(self.clock)}
                    self.status.set(state="error", errors=(self.status.doc["errors"] + [err])[-MAX_RECENT:])
                    print(f"[automated_testing] pass failed: {traceback.format_exc()}", file=sys.stderr)
                if once:
                    break
                self.stop_event.wait(self.cfg.evaluation.interval)
        finally:
            self.status.set(state="stopped", current=None)


def run_daemon(base_dir=None, once: bool = False, config=None) -> int:
    """Entry point with single-instance lock and signal handling. Returns an exit code."""
    from foundation.single_instance import AlreadyRunning, SingleInstance
    paths = Paths.from_base(base_dir)
    stop = threading.Event()
    lock = SingleInstance(paths.pids, INSTANCE_NAME)
    try:
        lock.acquire()
    except AlreadyRunning as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        tester = AutomatedTester(paths.base, config, stop_event=stop)
        tester.run(once=once)
        return 0
    finally:
        lock.release()

