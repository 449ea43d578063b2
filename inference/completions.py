"""Chat completion responses: where the batcher's output goes (sinks) and how it is written back,
as one JSON body or as OpenAI's server-sent events (``data: {...}`` chunks, then ``data: [DONE]``).

The batcher calls a sink from its own thread; a sink hands each event to the request's event loop
with ``call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable

from inference.errors import APIError
from trainer.generation.request import GenRequest
from inference.metrics import ServerMetrics

ENDPOINT = "/v1/chat/completions"


class FutureSink:
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


class QueueSink:
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


def completion_body(rid: str, created: int, model_id: str, version: str, text: str, reason: str,
                    usage: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model_id,
            "system_fingerprint": version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": reason, "logprobs": None}],
            "usage": usage}


def _sse(doc: dict) -> str:
    return "data: " + json.dumps(doc, ensure_ascii=False) + "\n\n"


async def sse_stream(rid: str, created: int, model_id: str, version: str, gen: GenRequest, sink: QueueSink,
                     include_usage: bool, t0: float, metrics: ServerMetrics,
                     on_served: Callable[[], None]) -> AsyncIterator[str]:
    """The SSE body of a streaming completion. Events already queued are sent in one write; a
    client that goes away before the end cancels the request (the batcher drops its row)."""
    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        doc = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_id,
               "system_fingerprint": version,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if usage is not None:
            doc["usage"] = usage
        return _sse(doc)

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
                        out.append(_sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                                         "model": model_id, "choices": [], "usage": usage}))
                    finished = True
                    on_served()
                    break
                else:
                    err: APIError = ev[1]
                    metrics.errors.labels(type=err.type, code=str(err.code)).inc()
                    out.append(_sse(err.envelope()))
                    finished = True
                    break
            yield "".join(out)
        yield "data: [DONE]\n\n"
        metrics.latency.labels(endpoint=ENDPOINT).observe(time.perf_counter() - t0)
    finally:
        if not finished:
            gen.cancel()
