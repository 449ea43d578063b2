"""The live monitor's HTTP app (FastAPI). Routes:

    GET  /                       the dashboard (monitoring/ui/index.html; js/ and css/ beside it)
    GET  /events                 Server-Sent Events: history, snapshot, step (monitoring/servers/sse.py)
    GET  /api/snapshot           the snapshot JSON (monitoring/servers/snapshot.py)
    GET  /api/history?points=N   the bounded window of logs/metrics.jsonl
    POST /api/actions/{action}   pause|resume|stop|skip|set_priority|retry|deploy|rollback, JSON params;
                                 admin key required (Authorization: Bearer; monitoring/servers/actions.py)
    GET  /metrics                Prometheus gauges (monitoring/servers/prom.py)
    GET  /health                 {"ok": true}

Every page asset is served from here and the Content-Security-Policy allows only this origin, so
the page works offline and cannot load or send anything elsewhere.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from foundation.paths import Paths
from monitoring.servers import actions
from monitoring.servers.metrics_history import read_window
from monitoring.servers.prom import metrics_text
from monitoring.servers.snapshot import build_snapshot
from monitoring.servers.sse import Broadcaster

UI_ROOT = Path(__file__).resolve().parent.parent  # monitoring/: ui/, js/, css/
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class MonitorSettings:
    paths: Paths
    host: str = "127.0.0.1"
    port: int = 8780
    history_points: int = 2000
    log_backups: int = 3
    admin_key: str = ""
    snapshot_interval: float = 2.0
    tail_interval: float = 0.2
    heartbeat: Callable[[dict], None] | None = None
    """Called every ``heartbeat_interval`` s from the event loop (a hung loop goes stale) with counters."""
    heartbeat_interval: float = 2.0


def create_app(s: MonitorSettings) -> FastAPI:
    def snapshot() -> dict:
        return build_snapshot(s.paths)

    def history(points: int | None = None) -> list[dict]:
        return read_window(s.paths.logs, min(points or s.history_points, s.history_points), s.log_backups)

    bc_holder: dict[str, Broadcaster] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        bc = Broadcaster(s.paths.logs, snapshot, history, tail_interval=s.tail_interval,
                         snapshot_interval=s.snapshot_interval)
        bc_holder["bc"] = app.state.broadcaster = bc
        tasks = [asyncio.create_task(bc.run())]
        if s.heartbeat is not None:
            tasks.append(asyncio.create_task(_beat(bc)))
        try:
            yield
        finally:
            bc.stopping.set()
            bc.poke()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, timeout=2.0)

    async def _beat(bc: Broadcaster) -> None:
        while not bc.stopping.is_set():
            with contextlib.suppress(Exception):  # a failed status write is retried at the next beat
                await asyncio.to_thread(s.heartbeat, {"clients": len(bc.clients), "events_sent": bc.events_sent})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(bc.stopping.wait(), timeout=s.heartbeat_interval)

    app = FastAPI(title="live monitor", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    app.mount("/js", StaticFiles(directory=UI_ROOT / "js"), name="js")
    app.mount("/css", StaticFiles(directory=UI_ROOT / "css"), name="css")
    app.mount("/ui", StaticFiles(directory=UI_ROOT / "ui"), name="ui")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(UI_ROOT / "ui" / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.get("/api/snapshot")
    async def api_snapshot() -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(snapshot))

    @app.get("/api/history")
    async def api_history(points: int | None = None) -> JSONResponse:
        return JSONResponse({"points": await asyncio.to_thread(history, points)})

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(bc_holder["bc"].stream(request.is_disconnected), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/metrics")
    async def metrics() -> Response:
        last = lambda: bc_holder["bc"].last_point if "bc" in bc_holder else None  # noqa: E731
        body = await asyncio.to_thread(metrics_text, snapshot, last)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/api/actions/{action}")
    async def run_action(action: str, request: Request) -> JSONResponse:
        try:
            actions.check_admin(request.headers.get("authorization"), s.admin_key)
            try:
                params = await request.json() if await request.body() else {}
            except ValueError:
                raise actions.ActionError(400, "the body must be a JSON object") from None
            if not isinstance(params, dict):
                raise actions.ActionError(400, "the body must be a JSON object")
            cmd = actions.build_command(action, params, s.paths.base)
        except actions.ActionError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return JSONResponse({"ok": False, "error": str(e)}, status_code=e.status, headers=headers)
        result = await asyncio.to_thread(actions.run_command, cmd)
        if "bc" in bc_holder:
            bc_holder["bc"].poke()
        return JSONResponse(result, status_code=200 if result["ok"] else 502)

    return app
