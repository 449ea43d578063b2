"""What every autonomous sidecar shares: the loop, the single-instance lock, the status heartbeat,
logging, and the ``--once`` / ``--json`` command line.

A sidecar subclasses :class:`Sidecar`, sets ``name`` (lock ``.pids/<name>.lock``, log
``logs/<name>.log``, status ``status/<name>.json`` unless ``status_name`` says otherwise) and
implements :meth:`Sidecar.run_once`, which does one pass and returns the status fields it wants
published. The loop:

* waits on a ``threading.Event`` (``stop_event``) between passes, so SIGTERM/SIGINT or a test stop
  it at once; timestamps come from an injectable ``clock`` (seconds since the epoch);
* catches every exception of a pass: it is logged, recorded in the status (``state: "error"``,
  ``last_error``, ``errors``) and the next pass runs on schedule -- bad input never kills a sidecar;
* rewrites ``status/<name>.json`` (``foundation.status_io.write_status``: ``schema_version``,
  ``updated_at``, ``pid``, ``heartbeat_at``) after every pass and every ``monitoring.status_interval``
  seconds as a heartbeat, which is what the watchdog's row checks.

Entry points call :func:`main` (``python3 monitoring/<name>.py [--base-dir D] [--once] [--json]``)
or :func:`click_command` to build the ``trainctl`` command.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, ClassVar

from foundation import logs as foundation_logs
from foundation.logs import close_logging
from foundation.paths import Paths
from foundation.status_io import utc_now_iso, write_status

MAX_ERRORS = 20


def setup_logging(logs_dir: str | Path, name: str, *, to_stderr: bool = False) -> logging.Logger:
    """``logs/<name>.log`` through the shared rotating setup (``foundation.logs``); the logger is
    ``autonomy.<name>``."""
    return foundation_logs.setup_logging(logs_dir, f"autonomy.{name}", file_name=name, to_stderr=to_stderr)


class Sidecar:
    """Base class of an autonomous sidecar. Subclasses set ``name`` and implement ``run_once``."""

    name: ClassVar[str] = "sidecar"
    status_name: ClassVar[str | None] = None
    """Status file name without .json (default: ``name``)."""

    def __init__(self, base_dir=None, config=None, *, stop_event: threading.Event | None = None,
                 clock: Callable[[], float] | None = None, logger: logging.Logger | None = None):
        from trainer.config.loader import load_config
        self.paths = Paths.from_base(base_dir)
        self.cfg = config if config is not None else load_config(base_dir=self.paths.base)
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.log = logger or logging.getLogger(f"autonomy.{self.name}")
        self.status_path = self.paths.status_file(self.status_name or self.name)
        self._lock = threading.Lock()
        self.doc: dict[str, Any] = {"state": "starting", "started_at": self.now(), "passes": 0,
                                    "last_pass_state": None, "last_error": None, "errors": []}

    # ------------------------------------------------------------------ to override
    def interval(self) -> float:
        """Seconds between passes."""
        return 30.0

    def run_once(self) -> dict[str, Any]:
        """One pass; returns the status fields to publish (merged into the status document)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ status
    def now(self) -> str:
        return utc_now_iso(self.clock)

    def publish(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the status document and write it atomically (with heartbeat)."""
        with self._lock:
            self.doc.update(fields)
            return write_status(self.status_path, dict(self.doc), daemon=True, clock=self.clock)

    def record_error(self, message: str) -> None:
        err = {"error": message, "at": self.now()}
        self.publish(state="error", last_error=err, errors=(self.doc["errors"] + [err])[-MAX_ERRORS:])

    def _heartbeat(self) -> None:
        every = float(self.cfg.monitoring.status_interval)
        while not self.stop_event.wait(every):
            try:
                self.publish()
            except OSError as e:  # a full disk must not kill the heartbeat thread
                self.log.warning("status heartbeat failed: %s", e)

    # ------------------------------------------------------------------ loop
    def step(self) -> dict[str, Any]:
        """One guarded pass: any exception is logged and recorded in the status; a status write that
        fails too (a full disk) is logged, and the loop goes on either way."""
        try:
            fields = self.run_once() or {}
        except Exception as e:  # noqa: BLE001 - a bad pass must not stop the daemon
            self.log.error("pass failed: %s\n%s", e, traceback.format_exc())
            try:
                self.doc["last_pass_state"] = "error"
                self.record_error(f"{type(e).__name__}: {e}")
            except OSError as e2:
                self.log.error("status write failed too: %s", e2)
            return self.doc
        fields.setdefault("state", "idle")
        fields["last_pass_state"] = fields["state"]  # still there once the final "stopped" is written
        try:
            return self.publish(passes=self.doc["passes"] + 1, last_pass_at=self.now(), **fields)
        except OSError as e:
            self.log.error("status write failed: %s", e)
            return self.doc

    def run(self, once: bool = False) -> dict[str, Any]:
        """Loop until ``stop_event`` (or one pass with ``once``); returns the last status written."""
        foundation_logs.enable_stack_dumps()
        written = self.publish()
        beat = None
        if not once:
            beat = threading.Thread(target=self._heartbeat, name=f"{self.name}-heartbeat", daemon=True)
            beat.start()
        try:
            while not self.stop_event.is_set():
                self.step()
                if once:
                    break
                self.stop_event.wait(self.interval())
        finally:
            self.stop_event.set()
            if beat is not None:
                beat.join(timeout=5)
            try:
                written = self.publish(state="stopped")
            except OSError as e:
                self.log.warning("final status write failed: %s", e)
        return written


def run_sidecar(factory: Callable[..., Sidecar], name: str, base_dir=None, *, once: bool = False,
                as_json: bool = False, config=None, to_stderr: bool | None = None) -> int:
    """Lock, signals, logging, run. ``factory(base_dir, config, stop_event=..., logger=...)`` builds
    the sidecar. Exit codes: 0 done, 1 already running, 2 configuration error."""
    from foundation.single_instance import AlreadyRunning, SingleInstance
    from trainer.config.loader import ConfigError, load_config
    paths = Paths.from_base(base_dir)
    try:
        cfg = config if config is not None else load_config(base_dir=paths.base)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lock = SingleInstance(paths.pids, name)
    try:
        lock.acquire()
    except AlreadyRunning as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    logger = setup_logging(paths.logs, name, to_stderr=(not as_json) if to_stderr is None else to_stderr)
    stop = threading.Event()
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        sidecar = factory(paths.base, cfg, stop_event=stop, logger=logger)
        logger.info("started (once=%s)", once)
        doc = sidecar.run(once=once)
        logger.info("stopped")
        if as_json:
            print(json.dumps(doc, indent=2, default=str))
        return 0
    finally:
        close_logging(logger)
        lock.release()


def click_command(factory: Callable[..., Sidecar], name: str, help_text: str):
    """A click command ``[--base-dir D] [--once] [--json]`` that runs the sidecar (for trainctl and
    the entry script)."""
    import click

    @click.command(name.replace("_", "-"), help=help_text)
    @click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                  help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
    @click.option("--once", is_flag=True, help="One pass, then exit.")
    @click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON at exit.")
    def command(base_dir, once, as_json) -> None:
        sys.exit(run_sidecar(factory, name, base_dir, once=once, as_json=as_json))

    return command
