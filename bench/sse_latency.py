#!/usr/bin/env python3
"""Step-to-browser latency of the live monitor: the time from a training step's line being appended
to ``logs/metrics.jsonl`` (by the engine's own writer, ``trainer/engine/metrics_log.py``) until an
EventSource client of ``/events`` has received it as a ``step`` event. Target (issue 11): p95 <= 2 s.

A real monitor process on a free 127.0.0.1 port over a fresh base dir; the client is an SSE reader
over httpx (what the browser's EventSource does: one long GET, events split on blank lines).

    .venv/bin/python bench/sse_latency.py [--steps 40] [--gap 0.25]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from foundation.paths import Paths  # noqa: E402
from tests.helpers.inference_server import free_port  # noqa: E402
from tests.helpers.waiting import wait_for  # noqa: E402
from trainer.engine.metrics_log import MetricsLog  # noqa: E402


def reader(url: str, received: dict[int, float], connected: threading.Event, stop: threading.Event) -> None:
    with httpx.Client(timeout=None) as client, client.stream("GET", url + "/events") as resp:
        event = None
        for line in resp.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                connected.set()
            elif line.startswith("data: ") and event == "step":
                now = time.time()
                for p in json.loads(line[6:])["points"]:
                    received.setdefault(int(p["global_step"]), now)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.25, help="seconds between appended steps")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths.from_base(tmp).ensure()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, str(REPO / "monitoring/servers/live_monitor.py"), "--base-dir", tmp,
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        received: dict[int, float] = {}
        sent: dict[int, float] = {}
        connected, stop = threading.Event(), threading.Event()
        try:
            wait_for(lambda: _up(url), 60, "monitor up", proc=proc)
            t = threading.Thread(target=reader, args=(url, received, connected, stop), daemon=True)
            t.start()
            wait_for(connected.is_set, 30, "first snapshot")
            log = MetricsLog(paths.logs / "metrics.jsonl")
            for step in range(1, a.steps + 1):
                sent[step] = time.time()
                log.log({"loss": 1.0 / step}, global_step=step, step_in_file=step, epoch=0.0, tokens=100, elapsed=1.0)
                time.sleep(a.gap)  # the pace of a fast trainer, not a synchronisation
            wait_for(lambda: len(received) >= a.steps, 30, "every step received")
        finally:
            stop.set()
            proc.terminate()
            proc.wait(timeout=15)
    lat = sorted(received[s] - sent[s] for s in sent if s in received)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    print(f"steps {len(lat)}  p50 {statistics.median(lat) * 1000:.0f} ms  p95 {p95 * 1000:.0f} ms  "
          f"max {lat[-1] * 1000:.0f} ms  (target p95 <= 2000 ms)")


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
