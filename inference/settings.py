"""The inference server's settings (config.json ``inference`` section + environment + CLI flags)
and the bind-safety rule checked before it listens."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.net import is_loopback
from foundation.paths import Paths


@dataclass
class ServerSettings:
    """Everything the app needs, resolved from config.json + environment + CLI flags."""

    base_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str = ""
    admin_api_key: str = ""
    device: str = "auto"
    precision: str = "auto"                # foundation.device's rule; the evaluator uses the same key
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
    upload_max_bytes: int = 64 * 2**30     # largest version accepted over PUT /models/upload
    upload_stale_seconds: float = 86400.0  # an unfinished upload idle this long is discarded

    @classmethod
    def from_config(cls, base_dir: str | Path | None = None, environ: dict | None = None, **overrides: Any
                    ) -> "ServerSettings":
        from trainer.config.keys import resolve_inference_keys
        from trainer.config.loader import load_config
        environ = os.environ if environ is None else environ
        paths = Paths.from_base(base_dir)
        cfg = load_config(base_dir=paths.base, environ=environ)
        inf = cfg.inference
        keys = resolve_inference_keys(cfg, paths.base, environ)  # environment > key file > config value
        s = cls(base_dir=paths.base, host=inf.host, port=inf.port,
                api_key=keys.api_key, admin_api_key=keys.admin_api_key,
                device=inf.device, precision=inf.precision, max_batch_size=inf.max_batch_size, max_queue=inf.max_queue,
                batch_wait_ms=inf.batch_wait_ms, default_max_tokens=inf.default_max_tokens,
                model_dir=inf.model_dir, model_id=cfg.model.model_name, profile_name=cfg.profile.name,
                profile_options=dict(cfg.profile.options), system_prompt=cfg.profile.system_prompt,
                trust_remote_code=cfg.model.trust_remote_code,
                base_model_path=str(paths.resolve(cfg.model.model_path)),
                serve_base_model_when_empty=inf.serve_base_model_when_empty, num_threads=inf.num_threads,
                upload_max_bytes=inf.upload_max_bytes, upload_stale_seconds=inf.upload_stale_seconds,
                status_interval=cfg.monitoring.status_interval)
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s


def check_bind_safety(settings: ServerSettings) -> None:
    """Refuse to expose the server beyond this machine without both API keys."""
    if not is_loopback(settings.host) and not (settings.api_key and settings.admin_api_key):
        raise ValueError(
            f"refusing to bind {settings.host!r} (not a loopback address) without API keys: set "
            "inference.api_key and inference.admin_api_key (or inference.*_api_key_file) in config.json or $INFERENCE_API_KEY and "
            "$INFERENCE_ADMIN_KEY")
