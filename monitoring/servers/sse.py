"""Server-Sent Events for the live monitor: push, not poll.

One ``Broadcaster`` task per server watches ``logs/metrics.jsonl`` (a stat every
``tail_interval`` s: cheap, and portable where inotify is not) and rebuilds the snapshot every
``snapshot_interval`` s while anyone listens; each connected browser gets its own bounded queue.
Events:

* ``history``  ``{"points": [...]}`` once per connection: the bounded window of the metrics log
* ``snapshot`` the whole snapshot (``snapshot.build_snapshot``), at connect and then periodically
* ``step``     ``{"points": [...]}``: metrics lines appended since the last look (new training steps)

The stream starts with ``retry: 1000``: the browser's EventSource reconnects by itself one second
after a dropped connection, and gets a fresh ``history`` + ``snapshot`` (so nothing is missed).
A client too slow to drain its queue is dropped (it reconnects) rather than growing memory.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

from monitoring.servers.metrics_history import MetricsTail

QUEUE_SIZE = 256
KEEPALIVE_S = 15.0


def sse_event(event: str, data: Any) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False) if not isinstance(data, str) else data
    return f"event: {event}\ndata: {body}\n\n".encode()


class Broadcaster:
    def __init__(self, logs_dir, build_snapshot: Callable[[], dict], read_history: Callable[[], list[dict]],
                 tail_interval: float = 0.2, snapshot_interval: float = 2.0):
        self.tail = MetricsTail(logs_dir, from_end=True)
        self.build_snapshot = build_snapshot
        self.read_history = read_history
        self.tail_interval = tail_interval
        self.snapshot_interval = snapshot_interval
        self.clients: set[asyncio.Queue] = set()
        self.last_point: dict | None = None
        self.events_sent = 0
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._force = False

    def _publish(self, chunk: bytes) -> None:
        for q in list(self.clients):
            try:
                q.put_nowait(chunk)
                self.events_sent += 1
            except asyncio.QueueFull:
                self.clients.discard(q)
                q.get_nowait()
                q.put_nowait(None)  # it ends after what it holds; the browser reconnects and catches up

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time()
        while not self.stopping.is_set():
            try:
                points = await asyncio.to_thread(self.tail.poll)
                if points:
                    self.last_point = points[-1]
                    self._publish(sse_event("step", {"points": points}))
                if self.clients and (self._force or loop.time() >= next_snapshot):
                    self._force = False
                    next_snapshot = loop.time() + self.snapshot_interval
                    snap = await asyncio.to_thread(self.build_snapshot)
                    self._publish(sse_event("snapshot", snap))
            except Exception as e:  # a bad read must not end the stream for everyone
                self._publish(sse_event("error", {"message": f"{type(e).__name__}: {e}"}))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.tail_interval)
            except asyncio.TimeoutError:
                pass

    def poke(self) -> None:
        """Rebuild the snapshot now (after an action changed something)."""
        self._force = True
        self._wake.set()

    async def stream(self, is_disconnected: Callable[[], Any]) -> AsyncIterator[bytes]:
        q: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        yield b"retry: 1000\n\n"
        # Subscribed before the history is read: a step appended meanwhile may come twice (the page
        # keys points by global step), never not at all.
        self.clients.add(q)
        try:
            history, snap = await asyncio.gather(asyncio.to_thread(self.read_history),
                                                 asyncio.to_thread(self.build_snapshot))
            yield sse_event("history", {"points": history})
            yield sse_event("snapshot", snap)
            while not self.stopping.is_set():
                try:
                    chunk = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)
                except asyncio.TimeoutError:
                    if await is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                if chunk is None:
                    return
                yield chunk
        finally:
            self.clients.discard(q)
