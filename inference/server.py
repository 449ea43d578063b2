"""The OpenAI-compatible inference server (FastAPI app). Start it with ``trainctl serve``.

Endpoints (REMOTE_INFERENCE.md has the full contract):
  POST /v1/chat/completions   OpenAI chat completions, with ``stream`` (SSE ending in ``data: [DONE]``)
  GET  /v1/models             the served model
  GET  /health                {"status": "ok"} once a model is loaded, 503 while none is
  GET  /models/info           version, global step, path, profile, parameters, dtype, device...
  POST /models/reload         admin: load a version from models/deployed/ beside the current one, then swap
  GET  /metrics               Prometheus text format

Why the reload is safe: the new model is loaded in a worker thread while the old one keeps serving;
the swap is a single reference assignment; requests already validated against the old model stay
bound to it (see ``inference.batcher``), so nothing in flight fails or waits for the load.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from foundation.paths import Paths
from inference.batcher import Batcher, GenRequest
from inference.errors import (APIError, AUTHENTICATION, INVALID_REQUEST, NOT_FOUND, PERMISSION, SERVER, UNAVAILABLE,
                              error_envelope)
from inference.metrics import ServerMetrics
from inference.model_loader import (BASE_VERSION, LoadedModel, load_model, read_current_version, resolve_model_path,
                                    resolve_version)
from inference import profile_adapter, validation

log = logging.getLogger("inference.server")

READ_ENDPOINTS = ("/v1/chat/completions", "/v1/models", "/models/info", "/metrics")
KNOWN_ENDPOINTS = READ_ENDPOINTS + ("/health", "/models/reload")


@dataclass
class ServerSettings:
    """Everything the app needs, resolved from config.json + environment + CLI flags."""

    base_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str = ""
    admin_api_key: str = ""
    device: str = "auto"
    max_batch_size: int = 16
    max_queue: int = 256
    batch_wait_ms: float = 10.0
    default_max_tokens: int = 128
    model_dir: str = "models/deployed"
    model_id: str = "tiny-qwen3"
    profile_name: str = "plain"
    profile_options: dict = field(default_factory=dict)
    system_prompt: str = ""
    trust_remote_code: bool = False
    initial_model: str | None = None       # explicit --model PATH (operator's choice)
    base_model_path: str | None = None     # served as version "base" when nothing is deployed
    serve_base_model_when_empty: bool = True
    status_interval: float = 2.0
    write_status_file: bool = True
    num_threads: int = 0                   # torch CPU threads; 0 = torch default

    @classmethod
    def from_config(cls, base_dir: str | Path | None = None, environ: dict | None = None, **overrides: Any
                    ) -> "ServerSettings":
        import os
        from trainer.config.loader import load_config
        environ = os.environ if environ is None else environ
        paths = Paths.from_base(base_dir)
        cfg = load_config(base_dir=paths.base, environ=environ)
        inf = cfg.inference
        s = cls(base_dir=paths.base, host=inf.host, port=inf.port,
                api_key=environ.get("INFERENCE_API_KEY") or inf.api_key,
                admin_api_key=environ.get("INFERENCE_ADMIN_KEY") or inf.admin_api_key,
                device=inf.device, max_batch_size=inf.max_batch_size, max_queue=inf.max_queue,
                batch_wait_ms=inf.batch_wait_ms, default_max_tokens=inf.default_max_tokens,
                model_dir=inf.model_dir, model_id=cfg.model.model_name, profile_name=cfg.profile.name,
                profile_options=dict(cfg.profile.options), system_prompt=cfg.profile.system_prompt,
                trust_remote_code=cfg.model.trust_remote_code,
                base_model_path=str(paths.resolve(cfg.model.model_path)),
                serve_base_model_when_empty=inf.serve_base_model_when_empty, num_threads=inf.num_threads,
                status_interval=cfg.monitoring.status_interval)
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s


def is_loopback(host: str) -> bool:
    import ipaddress
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_safety(settings: ServerSettings) -> None:
    """Refuse to expose the server beyond this machine without both API keys."""
    if not is_loopback(settings.host) and not (settings.api_key and settings.admin_api_key):
        raise ValueError(
            f"refusing to bind {settings.host!r} (not a loopback address) without API keys: set "
            "inference.api_key and inference.admin_api_key in config.json or $INFERENCE_API_KEY and "
            "$INFERENCE_ADMIN_KEY")


# ---------------------------------------------------------------------------- sinks
class _FutureSink:
    """Non-streaming: collect pieces in the batcher thread, resolve one future at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.parts: list[str] = []

    def _set(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def delta(self, text: str) -> None:
        self.parts.append(text)

    def finish(self, reason: str, usage: dict) -> None:
        self.loop.call_soon_threadsafe(self._set, ("finish", "".join(self.parts), reason, usage))

    def fail(self, error: APIError) -> None:
        self.loop.call_soon_threadsafe(self._set, ("error", error))


class _QueueSink:
    """Streaming: every piece crosses to the event loop as it is produced."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def delta(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("delta", text))

    def finish(self, reason: str, usage: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("finish", reason, usage))

    def fail(self, error: APIError) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("error", error))


# ---------------------------------------------------------------------------- state
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
            from foundation.atomic_io import atomic_write_text
            import os
            atomic_write_text(self.pid_file, f"{os.getpid()}\n")
        t = threading.Thread(target=self._initial_load, name="initial-load", daemon=True)
        t.start()
        self._threads.append(t)
        if self.settings.write_status_file:
            h = threading.Thread(target=self._heartbeat, name="status-heartbeat", daemon=True)
            h.start()
            self._threads.append(h)

    def stop(self) -> None:
        import os
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
                engine = self.loader(folder, version=version, model_id=s.model_id, device=s.device,
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
        from foundation.status_io import write_status
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
                "started_at": _iso(self.started_at),
            }, daemon=True)
        except OSError:
            log.exception("could not write status/inference_server.json")


def _iso(ts: float) -> str:
    from foundation.status_io import utc_now_iso
    return utc_now_iso(lambda: ts)


# ---------------------------------------------------------------------------- app
def create_app(settings: ServerSettings, state: ServerState | None = None):
    from contextlib import asynccontextmanager

    st = state or ServerState(settings)

    @asynccontextmanager
    async def lifespan(app):
        st.start()
        try:
            yield
        finally:
            st.stop()

    app = FastAPI(title="continuous-trainer inference", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = st

    def error_response(err: APIError) -> JSONResponse:
        st.metrics.errors.labels(type=err.type, code=str(err.code)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.envelope(), status_code=err.status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            err = APIError(404, f"no such endpoint: {request.method} {request.url.path}", NOT_FOUND, None,
                           "unknown_url")
        elif exc.status_code == 405:
            err = APIError(405, f"method {request.method} is not allowed on {request.url.path}", INVALID_REQUEST,
                           None, "method_not_allowed")
        else:
            err = APIError(exc.status_code, str(exc.detail), INVALID_REQUEST if exc.status_code < 500 else SERVER)
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", SERVER, None, "internal_error"))

    @app.middleware("http")
    async def _count(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        endpoint = path if path in KNOWN_ENDPOINTS else "other"
        try:
            response = await call_next(request)
        except Exception:
            st.metrics.requests.labels(endpoint=endpoint, status="500").inc()
            raise
        st.metrics.requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        if endpoint != "/v1/chat/completions":
            st.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)
        return response

    # -- auth
    def _bearer(request: Request) -> str | None:
        h = request.headers.get("authorization", "")
        if h[:7].lower() == "bearer ":
            return h[7:].strip()
        return None

    def _matches(token: str | None, key: str) -> bool:
        return bool(key) and token is not None and hmac.compare_digest(token.encode(), key.encode())

    def require_read(request: Request) -> None:
        """With a read key configured, every endpoint but /health needs it (or the admin key)."""
        s = st.settings
        if not s.api_key:
            return
        token = _bearer(request)
        if _matches(token, s.api_key) or _matches(token, s.admin_api_key):
            return
        raise APIError(401, "missing API key (Authorization: Bearer <key>)" if token is None
                       else "incorrect API key", AUTHENTICATION, None, "invalid_api_key")

    def require_admin(request: Request) -> None:
        s = st.settings
        key = s.admin_api_key or s.api_key
        if not key:
            return
        token = _bearer(request)
        if _matches(token, key):
            return
        if token is not None and _matches(token, s.api_key):
            raise APIError(403, "this endpoint needs the admin API key", PERMISSION, None, "admin_key_required")
        raise APIError(401, "missing admin API key (Authorization: Bearer <key>)" if token is None
                       else "incorrect admin API key", AUTHENTICATION, None, "invalid_api_key")

    async def read_body(request: Request, allow_empty: bool = False) -> dict:
        cl = request.headers.get("content-length")
        if cl and cl.isdigit() and int(cl) > validation.MAX_BODY_BYTES:
            raise APIError(413, f"request body is {cl} bytes; the limit is {validation.MAX_BODY_BYTES} bytes "
                                "(1 MiB)", INVALID_REQUEST, None, "request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > validation.MAX_BODY_BYTES:
                raise APIError(413, f"request body is over the limit of {validation.MAX_BODY_BYTES} bytes (1 MiB)",
                               INVALID_REQUEST, None, "request_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if allow_empty and not raw.strip():
            return {}
        return validation.parse_json_body(raw)

    def engine_or_503() -> LoadedModel:
        eng = st.engine
        if eng is None:
            msg = "no model is loaded yet" + (f" (last error: {st.last_error})" if st.last_error else "")
            raise APIError(503, msg, UNAVAILABLE, None, "model_not_loaded")
        return eng

    # -- endpoints
    @app.get("/health")
    async def health():
        eng = st.engine
        if eng is None:
            env = error_envelope("no model is loaded yet", UNAVAILABLE, None, "model_not_loaded")
            return JSONResponse({"status": st.state, **env}, status_code=503)
        return {"status": "ok", "version": eng.version, "global_step": eng.global_step}

    @app.get("/v1/models")
    async def list_models(request: Request):
        require_read(request)
        eng = st.engine
        data = []
        if eng is not None:
            data.append({"id": eng.model_id, "object": "model", "created": int(eng.loaded_at),
                         "owned_by": "continuous-trainer", "version": eng.version, "global_step": eng.global_step})
        return {"object": "list", "data": data}

    @app.get("/models/info")
    async def models_info(request: Request):
        require_read(request)
        eng = engine_or_503()
        info = eng.info(st.paths.base)
        info.update({"state": st.state, "queue_depth": st.batcher.queue_depth, "active_requests": st.batcher.active,
                     "max_batch_size": st.settings.max_batch_size, "reloads": st.reload_count})
        return info

    @app.post("/models/reload")
    async def models_reload(request: Request):
        require_admin(request)
        body = await read_body(request, allow_empty=True)
        folder, version = st.resolve_reload_target(body)
        return await asyncio.to_thread(st.reload, folder, version)

    @app.get("/metrics")
    async def metrics(request: Request):
        require_read(request)
        st.metrics.queue_depth.set(st.batcher.queue_depth)
        st.metrics.active.set(st.batcher.active)
        return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        require_read(request)
        body = await read_body(request)
        eng = st.engine
        req = validation.parse_chat_request(body, default_model=eng.model_id if eng else "")
        eng = engine_or_503()
        validation.bind_to_model(req, eng, st.settings.default_max_tokens)
        loop = asyncio.get_running_loop()
        sink = _QueueSink(loop) if req.stream else _FutureSink(loop)
        gen = GenRequest(eng, req.prompt_ids, req.max_tokens, sink, temperature=req.temperature, top_p=req.top_p,
                         stop=req.stop_all, seed=req.seed, presence_penalty=req.presence_penalty,
                         frequency_penalty=req.frequency_penalty, logit_bias=req.logit_bias,
                         processors=profile_adapter.logits_processors(eng.profile, eng.tokenizer))
        st.batcher.submit(gen)  # 429 when the queue is full
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if req.stream:
            return StreamingResponse(_stream(rid, created, eng, gen, sink, req.include_usage, t0),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            result = await sink.future
        except asyncio.CancelledError:
            gen.cancel()
            raise
        st.metrics.latency.labels(endpoint="/v1/chat/completions").observe(time.perf_counter() - t0)
        if result[0] == "error":
            raise result[1]
        _, text, reason, usage = result
        st.requests_served += 1
        text = profile_adapter.postprocess(eng.profile, text)
        return {"id": rid, "object": "chat.completion", "created": created, "model": eng.model_id,
                "system_fingerprint": eng.version,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": reason, "logprobs": None}],
                "usage": usage}

    async def _stream(rid: str, created: int, eng: LoadedModel, gen: GenRequest, sink: _QueueSink,
                      include_usage: bool, t0: float):
        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
            doc = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": eng.model_id,
                   "system_fingerprint": eng.version,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if usage is not None:
                doc["usage"] = usage
            return "data: " + json.dumps(doc, ensure_ascii=False) + "\n\n"

        finished = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            while not finished:
                events = [await sink.queue.get()]
                while not sink.queue.empty():
                    events.append(sink.queue.get_nowait())
                out = []
                for ev in events:
                    if ev[0] == "delta":
                        out.append(chunk({"content": ev[1]}))
                    elif ev[0] == "finish":
                        _, reason, usage = ev
                        out.append(chunk({}, reason, usage))
                        if include_usage:
                            doc = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                   "model": eng.model_id, "choices": [], "usage": usage}
                            out.append("data: " + json.dumps(doc) + "\n\n")
                        finished = True
                        st.requests_served += 1
                        break
                    else:
                        err: APIError = ev[1]
                        st.metrics.errors.labels(type=err.type, code=str(err.code)).inc()
                        out.append("data: " + json.dumps(err.envelope()) + "\n\n")
                        finished = True
                        break
                yield "".join(out)
            yield "data: [DONE]\n\n"
            st.metrics.latency.labels(endpoint="/v1/chat/completions").observe(time.perf_counter() - t0)
        finally:
            if not finished:
                gen.cancel()

    return app
