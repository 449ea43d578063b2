"""The rank-0 job endpoint of a multi-machine launch: how a worker machine learns which job to
join without sharing the daemon's queue or status files.

While the trainer child runs a job with ``training.num_machines > 1`` it serves, on
``training.main_process_ip:training.job_server_port``:

  GET /job  -> 200 {"launch_id", "job": TrainJob dict, "machine_rank": 0}  (Bearer token when
               $TRAINER_CLUSTER_TOKEN is set)

``launch_id`` is new for every launch (every try of every job), so a worker whose launch ended
(the group failed, or the job finished) never joins the same launch twice; it waits for the next
one. Between launches nothing listens: a worker sees "connection refused" and keeps polling.
"""
from __future__ import annotations

import hmac
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JobServer:
    def __init__(self, host: str, port: int, job_doc: dict, token: str | None):
        self.launch_id = uuid.uuid4().hex
        body = json.dumps({"launch_id": self.launch_id, "job": job_doc, "machine_rank": 0}).encode()
        expected = f"Bearer {token}" if token else None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if expected is not None and not hmac.compare_digest(
                        (self.headers.get("Authorization") or "").encode(), expected.encode()):
                    self._send(401, b'{"error": "bad or missing token"}')
                elif self.path.split("?", 1)[0] != "/job":
                    self._send(404, b'{"error": "not found"}')
                else:
                    self._send(200, body)

            def _send(self, code: int, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, fmt: str, *args) -> None:  # one line per poll would flood the log
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="job-server")

    def __enter__(self) -> "JobServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
