#!/usr/bin/env python3
"""The one client other daemons use to talk to the inference server (health, info, reload, chat,
and the admin upload endpoints that push a version to a server on another machine).

Why not the ``openai`` package: the sidecars also need the admin endpoints (``/models/reload``,
``/models/info``) and clear, typed failures (unreachable vs. refused vs. broken model), and must not
retry behind our back. Plain ``httpx``, synchronous, no torch import.

    python3 monitoring/prediction_client.py health
    python3 monitoring/prediction_client.py info
    python3 monitoring/prediction_client.py chat "Say hello." --max-tokens 16
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import quote

import httpx


class PredictionError(RuntimeError):
    """The server answered with an error (``status``, OpenAI envelope ``type``/``code``)."""

    def __init__(self, message: str, status: int | None = None, type: str | None = None,
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param


class ServerUnreachable(PredictionError):
    """No HTTP answer at all (not running, wrong port, connection refused, timeout)."""


@dataclass
class ChatResult:
    text: str
    finish_reason: str
    usage: dict
    model: str
    version: str | None
    raw: dict = field(repr=False, default_factory=dict)


def default_url(base_dir: str | os.PathLike | None = None) -> str:
    """The server URL from config (deployment.server_url, else inference.host/port)."""
    from trainer.config.loader import load_config
    cfg = load_config(base_dir=base_dir)
    if cfg.deployment.server_url:
        return cfg.deployment.server_url.rstrip("/")
    host = cfg.inference.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{cfg.inference.port}"


class PredictionClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8765", *, api_key: str | None = None,
                 admin_key: str | None = None, timeout: float = 60.0, transport: Any = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("INFERENCE_API_KEY") or None
        self.admin_key = admin_key if admin_key is not None else os.environ.get("INFERENCE_ADMIN_KEY") or None
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  trust_env=False)

    @classmethod
    def from_config(cls, base_dir: str | os.PathLike | None = None, **kwargs: Any) -> "PredictionClient":
        from trainer.config.keys import resolve_inference_keys
        from trainer.config.loader import load_config
        cfg = load_config(base_dir=base_dir)
        keys = resolve_inference_keys(cfg, base_dir)  # environment > key file > config value
        kwargs.setdefault("api_key", keys.api_key or None)
        kwargs.setdefault("admin_key", keys.admin_api_key or None)
        kwargs.setdefault("timeout", cfg.deployment.request_timeout)
        return cls(default_url(base_dir), **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _headers(self, admin: bool) -> dict:
        # A read key never opens an admin endpoint, so admin calls send only the admin key.
        key = self.admin_key if admin else (self.api_key or self.admin_key)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _request(self, method: str, path: str, *, admin: bool = False, json_body: Any = None,
                 content: Any = None, headers: dict | None = None,
                 timeout: float | None = None, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        try:
            r = self._http.request(method, path, json=json_body, content=content,
                                   headers={**self._headers(admin), **(headers or {})},
                                   timeout=timeout if timeout is not None else self.timeout)
        except httpx.TimeoutException as e:
            raise ServerUnreachable(f"{method} {self.base_url}{path} timed out: {e}") from e
        except httpx.TransportError as e:
            raise ServerUnreachable(f"cannot reach {self.base_url}{path}: {e}") from e
        if r.status_code not in ok:
            err: dict = {}
            try:
                doc = r.json()
                err = doc.get("error") or {} if isinstance(doc, dict) else {}
            except ValueError:
                pass
            code = f" {err.get('code')}" if err.get("code") else ""
            raise PredictionError(f"{method} {path} -> HTTP {r.status_code}{code}: "
                                  f"{err.get('message') or r.text[:300]}",
                                  r.status_code, err.get("type"), err.get("code"), err.get("param"))
        return r

    # ------------------------------------------------------------------ endpoints
    def health(self) -> dict:
        """``{"status": "ok", ...}``; raises PredictionError (503) while no model is loaded."""
        return self._request("GET", "/health").json()

    def is_reachable(self) -> bool:
        try:
            self._request("GET", "/health", ok=(200, 503))
            return True
        except ServerUnreachable:
            return False
        except PredictionError:
            return True

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                doc = self.health()
                if doc.get("status") == "ok":
                    return doc
            except PredictionError as e:
                last = e
            time.sleep(interval)
        raise ServerUnreachable(f"{self.base_url} not ready after {timeout:.0f}s: {last}")

    def info(self) -> dict:
        return self._request("GET", "/models/info").json()

    def models(self) -> list[dict]:
        return self._request("GET", "/v1/models").json().get("data", [])

    def reload(self, version: str | None = None, *, path: str | None = None, timeout: float | None = None) -> dict:
        """Ask the server to load a deployed version (or a model folder under models/) and swap it in."""
        body: dict = {}
        if version is not None:
            body["version"] = version
        if path is not None:
            body["path"] = path
        return self._request("POST", "/models/reload", admin=True, json_body=body, timeout=timeout).json()

    # ------------------------------------------------------------------ uploads (admin)
    @staticmethod
    def _upload_path(version: str, *rest: str) -> str:
        return "/models/upload/" + "/".join(quote(p, safe="") for p in (version, *rest))

    def upload_status(self, version: str) -> dict:
        """What the server holds of ``version``: ``deployed`` (the committed manifest or None) and
        ``incoming`` ({file: bytes received} of an unfinished upload)."""
        return self._request("GET", self._upload_path(version), admin=True).json()

    def upload_file(self, version: str, name: str, path: str | os.PathLike, *, offset: int = 0,
                    chunk_bytes: int = 1 << 20, timeout: float | None = None) -> dict:
        """Stream ``path`` from byte ``offset`` as file ``name`` of ``version`` (never read whole
        into memory). ``timeout`` bounds each read/write, not the whole transfer."""
        size = os.path.getsize(path)
        headers = {"Content-Length": str(size - offset)}
        if size:
            headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"

        def body() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                fh.seek(offset)
                while chunk := fh.read(chunk_bytes):
                    yield chunk

        return self._request("PUT", self._upload_path(version, name), admin=True, content=body(),
                             headers=headers, timeout=timeout).json()

    def commit_upload(self, version: str, files: dict[str, dict], *, timeout: float | None = None) -> dict:
        """Ask the server to verify ``files`` ({name: {"sha256", "size"}}) and make the version deployable."""
        return self._request("POST", self._upload_path(version, "commit"), admin=True,
                             json_body={"files": files}, timeout=timeout).json()

    def delete_version(self, version: str) -> dict:
        """Drop a version from the server (its unfinished upload and its deployed folder)."""
        return self._request("DELETE", self._upload_path(version), admin=True).json()

    def set_current(self, version: str) -> dict:
        """Point the server's models/deployed/current at ``version`` (what it loads when it restarts)."""
        return self._request("PUT", "/models/current", admin=True, json_body={"version": version}).json()

    def chat(self, messages: list[dict] | str, *, max_tokens: int | None = None, temperature: float = 0.0,
             top_p: float | None = None, stop: list[str] | str | None = None, seed: int | None = None,
             model: str | None = None, timeout: float | None = None, **extra: Any) -> ChatResult:
        """One chat completion (greedy by default, as the evaluators want)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body: dict = {"messages": messages, "temperature": temperature, **extra}
        for k, v in (("max_tokens", max_tokens), ("top_p", top_p), ("stop", stop), ("seed", seed),
                     ("model", model)):
            if v is not None:
                body[k] = v
        doc = self._request("POST", "/v1/chat/completions", json_body=body, timeout=timeout).json()
        choice = doc["choices"][0]
        return ChatResult(text=choice["message"]["content"], finish_reason=choice["finish_reason"],
                          usage=doc.get("usage", {}), model=doc.get("model", ""),
                          version=doc.get("system_fingerprint"), raw=doc)


# ---------------------------------------------------------------------- CLI (for people and scripts)
def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Talk to the inference server.")
    ap.add_argument("--url", default=None, help="server URL (default: from config.json)")
    ap.add_argument("--base-dir", default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("health")
    sub.add_parser("info")
    rl = sub.add_parser("reload")
    rl.add_argument("--version", default=None)
    ch = sub.add_parser("chat")
    ch.add_argument("prompt")
    ch.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args(argv)
    client = PredictionClient(a.url) if a.url else PredictionClient.from_config(a.base_dir)
    try:
        if a.cmd == "health":
            out: Any = client.health()
        elif a.cmd == "info":
            out = client.info()
        elif a.cmd == "reload":
            out = client.reload(a.version)
        else:
            r = client.chat(a.prompt, max_tokens=a.max_tokens)
            out = {"text": r.text, "finish_reason": r.finish_reason, "usage": r.usage, "version": r.version}
    except PredictionError as e:
        print(json.dumps({"error": str(e), "status": e.status, "type": e.type, "code": e.code}))
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
