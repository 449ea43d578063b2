"""The OpenAI-compatible inference server (FastAPI app). Start it with ``trainctl serve``.

Endpoints (REMOTE_INFERENCE.md has the full contract):
  POST /v1/chat/completions   OpenAI chat completions, with ``stream`` (SSE ending in ``data: [DONE]``)
  GET  /v1/models             the served model
  GET  /health                {"status": "ok"} once a model is loaded, 503 while none is
  GET  /models/info           version, global step, path, profile, parameters, dtype, device...
  POST /models/reload         admin: load a version from models/deployed/ beside the current one, then swap
  GET|PUT|POST|DELETE /models/upload/{version}[/{file}|/commit], PUT /models/current
                              admin: receive a version over HTTP (``uploads``), for a server on another machine
  GET  /metrics               Prometheus text format

This module is the HTTP layer only: the model holder and hot reload are ``server_state``, settings
``settings``, keys ``auth``, response bodies and SSE ``completions``, decoding ``batcher``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference import profile_adapter, validation
from inference.auth import require_admin, require_read
from inference.completions import ENDPOINT, FutureSink, QueueSink, completion_body, sse_stream
from inference.errors import APIError, INVALID_REQUEST, NOT_FOUND, SERVER, UNAVAILABLE, error_envelope
from trainer.generation.request import GenRequest
from inference.model_loader import LoadedModel
from inference.server_state import ServerState
from inference.settings import ServerSettings
from inference.uploads import UploadStore

__all__ = ["create_app", "ServerSettings", "ServerState"]

log = logging.getLogger("inference.server")

READ_ENDPOINTS = (ENDPOINT, "/v1/models", "/models/info", "/metrics")
KNOWN_ENDPOINTS = READ_ENDPOINTS + ("/health", "/models/reload")


async def read_body(request: Request, allow_empty: bool = False) -> dict:
    """The request's JSON object, refusing bodies over ``validation.MAX_BODY_BYTES`` while reading."""
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


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a request path (unknown paths share one label)."""
    if path in KNOWN_ENDPOINTS:
        return path
    return "/models/upload" if path.startswith("/models/upload/") else "other"


class RequestMetrics:
    """Counts every HTTP response by endpoint and status, and times the endpoints that do not time
    themselves (the completions endpoint observes its own latency). A plain ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs each request's app in an extra task
    with memory streams: 2.5 ms of event-loop CPU per completion with it, 1.7-1.9 ms without (h11,
    asyncio's loop; ``bench/serve_throughput.py`` prints today's figure)."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        endpoint = endpoint_label(scope["path"])
        status = 500

        async def send_counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            if endpoint != ENDPOINT:
                self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)


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

    app.add_middleware(RequestMetrics, metrics=st.metrics)

    def engine_or_503() -> LoadedModel:
        eng = st.engine
        if eng is None:
            msg = "no model is loaded yet" + (f" (last error: {st.last_error})" if st.last_error else "")
            raise APIError(503, msg, UNAVAILABLE, None, "model_not_loaded")
        return eng

    def count_served() -> None:
        st.requests_served += 1

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
        require_read(st.settings, request)
        eng = st.engine
        data = []
        if eng is not None:
            data.append({"id": eng.model_id, "object": "model", "created": int(eng.loaded_at),
                         "owned_by": "continuous-trainer", "version": eng.version, "global_step": eng.global_step})
        return {"object": "list", "data": data}

    @app.get("/models/info")
    async def models_info(request: Request):
        require_read(st.settings, request)
        eng = engine_or_503()
        info = eng.info(st.paths.base)
        info.update({"state": st.state, "queue_depth": st.batcher.queue_depth, "active_requests": st.batcher.active,
                     "max_batch_size": st.settings.max_batch_size, "reloads": st.reload_count})
        return info

    @app.post("/models/reload")
    async def models_reload(request: Request):
        require_admin(st.settings, request)
        body = await read_body(request, allow_empty=True)
        folder, version = st.resolve_reload_target(body)
        return await asyncio.to_thread(st.reload, folder, version)

    uploads = UploadStore(st.paths, st.settings.model_dir, max_bytes=st.settings.upload_max_bytes,
                          stale_seconds=st.settings.upload_stale_seconds,
                          served_version=lambda: st.engine.version if st.engine else None)

    @app.get("/models/upload/{version}")
    async def upload_status(version: str, request: Request):
        require_admin(st.settings, request)
        return uploads.status(version)

    @app.put("/models/upload/{version}/{name}")
    async def upload_file(version: str, name: str, request: Request):
        require_admin(st.settings, request)
        return await uploads.receive(version, name, request)

    @app.post("/models/upload/{version}/commit")
    async def upload_commit(version: str, request: Request):
        require_admin(st.settings, request)
        return await uploads.commit(version, await read_body(request))

    @app.delete("/models/upload/{version}")
    async def upload_delete(version: str, request: Request):
        require_admin(st.settings, request)
        return await uploads.delete(version)

    @app.put("/models/current")
    async def set_current(request: Request):
        require_admin(st.settings, request)
        return uploads.set_current(await read_body(request))

    @app.get("/metrics")
    async def metrics(request: Request):
        require_read(st.settings, request)
        st.metrics.queue_depth.set(st.batcher.queue_depth)
        st.metrics.active.set(st.batcher.active)
        return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post(ENDPOINT)
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        require_read(st.settings, request)
        body = await read_body(request)
        eng = st.engine
        req = validation.parse_chat_request(body, default_model=eng.model_id if eng else "")
        eng = engine_or_503()
        validation.bind_to_model(req, eng, st.settings.default_max_tokens)
        loop = asyncio.get_running_loop()
        sink = QueueSink(loop) if req.stream else FutureSink(loop)
        gen = GenRequest(eng, req.prompt_ids, req.max_tokens, sink, temperature=req.temperature, top_p=req.top_p,
                         stop=req.stop_all, seed=req.seed, presence_penalty=req.presence_penalty,
                         frequency_penalty=req.frequency_penalty, logit_bias=req.logit_bias,
                         processors=profile_adapter.logits_processors(eng.profile, eng.tokenizer))
        st.batcher.submit(gen)  # 429 when the queue is full
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if req.stream:
            return StreamingResponse(sse_stream(rid, created, eng.model_id, eng.version, gen, sink,
                                                req.include_usage, t0, st.metrics, count_served),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            result = await sink.future
        except asyncio.CancelledError:
            gen.cancel()
            raise
        st.metrics.latency.labels(endpoint=ENDPOINT).observe(time.perf_counter() - t0)
        if result[0] == "error":
            raise result[1]
        _, text, reason, usage = result
        count_served()
        return completion_body(rid, created, eng.model_id, eng.version,
                               profile_adapter.postprocess(eng.profile, text), reason, usage)

    return app
