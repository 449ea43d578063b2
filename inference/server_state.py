"""One server's state: the loaded model (hot-swapped by ``reload``), the batcher, the initial load
with its fallback to the base model, and the status file heartbeat.

Why the reload is safe: the new model is loaded in a worker thread while the old one keeps serving;
the swap is a single reference assignment; requests already validated against the old model stay
bound to it (see ``inference.batcher``), so nothing in flight fails or waits for the load.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from foundation.atomic_io import atomic_write_text
from foundation.paths import Paths
from foundation.status_io import utc_now_iso, write_status
from inference.batcher import Batcher
from inference.errors import APIError, INVALID_REQUEST, NOT_FOUND
from inference.metrics import ServerMetrics
from inference.model_loader import (BASE_VERSION, LoadedModel, load_model, read_current_version, resolve_model_path,
                                    resolve_version)
from inference.settings import ServerSettings

log = logging.getLogger("inference.server")


class ServerState:
    """The loaded model, the batcher, and the reload lock of one server."""

    def __init__(self, settings: ServerSettings, loader=load_model):
        self.settings = settings
        self.paths = Paths.from_base(settings.base_dir)
        self.metrics = ServerMetrics()
        self.batcher = Batcher(max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                               batch_wait_s=settings.batch_wait_ms / 1000.0, metrics=self.metrics,
                               num_threads=settings.num_threads)
        self.loader = loader
        self.engine: LoadedModel | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.started_at = time.time()
        self.requests_served = 0
        self.reload_count = 0
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle
    @property
    def pid_file(self) -> Path:
        return self.paths.pids / "inference_server.pid"

    def start(self) -> None:
        self.batcher.start()
        if self.settings.write_status_file:
            atomic_write_text(self.pid_file, f"{os.getpid()}\n")
        t = threading.Thread(target=self._initial_load, name="initial-load", daemon=True)
        t.start()
        self._threads.append(t)
        if self.settings.write_status_file:
            h = threading.Thread(target=self._heartbeat, name="status-heartbeat", daemon=True)
            h.start()
            self._threads.append(h)

    def stop(self) -> None:
        self._stop.set()
        self.batcher.stop()
        self._write_status(state="stopped")
        try:
            if self.pid_file.read_text().strip() == str(os.getpid()):
                self.pid_file.unlink()
        except OSError:
            pass

    def _initial_load(self) -> None:
        self.state = "loading"
        try:
            if self.settings.num_threads > 0:
                import torch
                torch.set_num_threads(self.settings.num_threads)
            target = self._initial_target()
            if target is None:
                self.state = "no_model"
                log.warning("no model to serve: nothing deployed under %s and no base model; "
                            "POST /models/reload once one is deployed", self.settings.model_dir)
                return
            folder, version = target
            try:
                self.reload(folder, version)
            except APIError as e:
                # a broken deployed version: serve the base model rather than nothing (the
                # orchestrator sees the mismatch with models/deployed/current and acts on it)
                base = self._base_target()
                if base is None or version == BASE_VERSION:
                    raise
                log.error("could not load %s (%s); serving the base model instead", version, e.message)
                self.reload(*base)
                self.last_error = e.message
        except Exception as e:  # noqa: BLE001
            self.last_error = f"{type(e).__name__}: {getattr(e, 'message', e)}"
            self.state = "no_model"
            log.exception("initial model load failed")
        self._write_status()

    def _initial_target(self) -> tuple[Path, str] | None:
        s = self.settings
        if s.initial_model:
            p = self.paths.resolve(s.initial_model).resolve()
            return p, p.name
        version = read_current_version(self.paths, s.model_dir)
        if version:
            try:
                return resolve_version(self.paths, version, s.model_dir), version
            except APIError as e:
                log.error("models/deployed/current names %r: %s", version, e.message)
        return self._base_target()

    def _base_target(self) -> tuple[Path, str] | None:
        s = self.settings
        if s.serve_base_model_when_empty and s.base_model_path and (Path(s.base_model_path) / "config.json").is_file():
            return Path(s.base_model_path), BASE_VERSION
        return None

    # -- reload
    def resolve_reload_target(self, body: dict) -> tuple[Path, str]:
        unknown = sorted(set(body) - {"version", "path"})
        if unknown:
            raise APIError(400, f"unrecognized reload argument(s): {', '.join(unknown)}; use 'version' or 'path'",
                           INVALID_REQUEST, unknown[0], "unknown_parameter")
        if "version" in body and "path" in body:
            raise APIError(400, "give either 'version' or 'path', not both", INVALID_REQUEST, "path")
        if "path" in body:
            p = resolve_model_path(self.paths, body["path"])
            return p, p.name
        version = body.get("version")
        if version is None:
            version = read_current_version(self.paths, self.settings.model_dir)
            if version is None:
                base = self._base_target()
                if base is None:
                    raise APIError(404, "nothing is deployed (models/deployed/current is missing) and no base "
                                        "model is configured", NOT_FOUND, "version", "version_not_found")
                return base
        if version == BASE_VERSION:
            s = self.settings
            if not (s.base_model_path and (Path(s.base_model_path) / "config.json").is_file()):
                raise APIError(404, "no base model folder is configured (model.model_path)", NOT_FOUND,
                               "version", "version_not_found")
            return Path(s.base_model_path), BASE_VERSION
        return resolve_version(self.paths, version, self.settings.model_dir), version

    def reload(self, folder: Path, version: str) -> dict:
        """Load ``folder`` beside the current model, then swap it in (blocking; run in a thread)."""
        s = self.settings
        with self._reload_lock:
            previous = self.engine.version if self.engine else None
            t0 = time.perf_counter()
            try:
                engine = self.loader(folder, version=version, model_id=s.model_id, device=s.device, precision=s.precision,
                                     profile_name=s.profile_name, profile_options=s.profile_options,
                                     system_prompt=s.system_prompt, trust_remote_code=s.trust_remote_code)
            except Exception as e:  # noqa: BLE001 - report, keep serving the old model
                self.metrics.reloads.labels(outcome="failed").inc()
                self.last_error = f"loading {folder}: {type(e).__name__}: {e}"
                log.exception("reload of %s failed", folder)
                raise APIError(422, f"could not load model version {version!r} from {folder}: "
                                    f"{type(e).__name__}: {e}; still serving {previous!r}",
                               INVALID_REQUEST, "version", "model_load_failed") from e
            self.engine = engine  # the swap: new requests bind to the new model from here on
            self.state = "serving"
            self.last_error = None
            self.reload_count += 1
            dt = time.perf_counter() - t0
            self.metrics.reloads.labels(outcome="ok").inc()
            self.metrics.reload_seconds.observe(dt)
            self.metrics.model_loaded.set(1)
            self.metrics.global_step.set(engine.global_step if engine.global_step is not None else -1)
            log.info("serving %s (version %s) after %.2fs; previous %s", folder, version, dt, previous)
        self._write_status()
        return {"status": "ok", "previous_version": previous, "reload_seconds": round(dt, 3),
                "info": engine.info(self.paths.base)}

    # -- status file
    def _heartbeat(self) -> None:
        while not self._stop.wait(self.settings.status_interval):
            self._write_status()

    def _write_status(self, state: str | None = None) -> None:
        if not self.settings.write_status_file:
            return
        s = self.settings
        try:
            write_status(self.paths.status_file("inference_server"), {
                "state": state or self.state,
                "url": f"http://{s.host}:{s.port}",
                "host": s.host, "port": s.port,
                "model": self.engine.info(self.paths.base) if self.engine else None,
                "queue_depth": self.batcher.queue_depth,
                "active_requests": self.batcher.active,
                "requests_served": self.requests_served,
                "reloads": self.reload_count,
                "last_error": self.last_error,
                "started_at": utc_now_iso(lambda: self.started_at),
            }, daemon=True)
        except OSError:
            log.exception("could not write status/inference_server.json")
