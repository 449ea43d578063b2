"""The config's secrets: which keys are secret (``secret=True`` in the schema), their redaction, and
the effective inference keys (environment > key file > inline value). The rule and the redaction
itself live in ``foundation.secrets``; this module only feeds it the schema's declarations.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from foundation.secrets import REDACTED, SecretError, is_secret, redact, resolve_secret
from trainer.config.loader import ConfigError, _resolve_type
from trainer.config.schema import Config

__all__ = ["REDACTED", "InferenceKeys", "is_secret_key", "redact_config", "resolve_inference_keys", "secret_keys"]


@lru_cache(maxsize=None)
def secret_keys() -> tuple[str, ...]:
    """Dotted keys of every schema field declared with ``secret=True``."""
    out: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for fl in dataclasses.fields(cls):
            t = _resolve_type(cls, fl)
            if dataclasses.is_dataclass(t):
                walk(t, f"{prefix}{fl.name}.")
            elif fl.metadata.get("secret"):
                out.append(f"{prefix}{fl.name}")
    walk(Config, "")
    return tuple(out)


def is_secret_key(dotted: str) -> bool:
    return is_secret(dotted, secret_keys())


def redact_config(data: Mapping[str, Any]) -> dict:
    """``data`` (a config dict, full or partial) with every non-empty secret shown as ``"***"``."""
    return redact(data, secret_keys())


@dataclass(frozen=True)
class InferenceKeys:
    api_key: str
    admin_api_key: str

    def __repr__(self) -> str:  # never put a key into a log line or a traceback
        return (f"InferenceKeys(api_key={REDACTED if self.api_key else ''!r}, "
                f"admin_api_key={REDACTED if self.admin_api_key else ''!r})")


def resolve_inference_keys(cfg: Config, base_dir: str | os.PathLike | None = None,
                           environ: Mapping[str, str] | None = None) -> InferenceKeys:
    """The read and admin keys the server enforces and its clients send.

    ``$INFERENCE_API_KEY`` / ``$INFERENCE_ADMIN_KEY`` > ``inference.*_file`` > ``inference.api_key`` /
    ``inference.admin_api_key``. Raises ``ConfigError`` naming the key and the file when a key
    file is readable by group/others, missing or empty."""
    from foundation.paths import Paths
    inf = cfg.inference
    base_dir = Paths.from_base(base_dir).base
    try:
        return InferenceKeys(
            api_key=resolve_secret("inference.api_key", value=inf.api_key, file=inf.api_key_file,
                                   env_var="INFERENCE_API_KEY", environ=environ, base_dir=base_dir),
            admin_api_key=resolve_secret("inference.admin_api_key", value=inf.admin_api_key,
                                         file=inf.admin_api_key_file, env_var="INFERENCE_ADMIN_KEY",
                                         environ=environ, base_dir=base_dir))
    except SecretError as e:
        raise ConfigError([str(e)], "inference keys") from None
