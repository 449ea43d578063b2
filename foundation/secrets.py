"""Secrets in configuration: what counts as one, how it is hidden, where it may come from.

One rule for "secret": a leaf whose name is ``key``, ``token``, ``secret``, ``password``,
``passwd``, ``passphrase`` or ``credentials`` or ends in ``_<one of those>`` (``api_key``,
``admin_api_key``, ``hf_token``, ``db_password``), plus any dotted key a caller declares
(``trainer.config`` passes the schema fields marked ``secret=True``; a test checks that each of
them also matches the name rule, so code that cannot see the schema, such as
``foundation.model_db``, hides the same keys). Names ending in ``_file`` (``api_key_file``) are
paths, not secrets.

``redact`` is the only redaction: ``trainctl config show``, ``config edit`` and its backups, and the
registry's ``runs.config_json`` all go through it. A redacted value is the literal ``"***"``; a key
resolved to that placeholder (a restored backup) is refused rather than used as a guessable key.

Keys may also live in a file that only its owner can read (checked like ssh checks a private key:
no group/other permission bits, owned by the current user or root). Environment variables
override both the file and the inline value.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable, Mapping

REDACTED = "***"

_SECRET_NAME = re.compile(r"(?:^|_)(?:key|token|secret|password|passwd|passphrase|credentials?)$", re.IGNORECASE)


class SecretError(ValueError):
    """A secret cannot be used: unsafe key file, unreadable or empty file, redaction placeholder."""


def is_secret_name(name: str) -> bool:
    """Whether a leaf name (the last part of a dotted key) names a secret."""
    return bool(_SECRET_NAME.search(name))


def is_secret(dotted: str, declared: Iterable[str] = ()) -> bool:
    """Whether dotted key ``dotted`` is secret: declared by the caller, or by the name rule."""
    return dotted in set(declared) or is_secret_name(dotted.rsplit(".", 1)[-1])


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def redact(obj: Any, declared: Iterable[str] = ()) -> Any:
    """A copy of ``obj`` (nested dicts/lists) with every non-empty secret value replaced by ``"***"``.

    Empty values stay as they are: "no key set" is useful to see and gives nothing away."""
    declared = frozenset(declared)

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for k, v in node.items():
                dotted = f"{prefix}{k}"
                if is_secret(dotted, declared) and not _is_empty(v):
                    out[k] = REDACTED
                else:
                    out[k] = walk(v, dotted + ".")
            return out
        if isinstance(node, (list, tuple)):
            return [walk(v, prefix) for v in node]
        return node

    return walk(obj, "")


def read_secret_file(path: str | os.PathLike, key_name: str) -> str:
    """The secret stored in ``path`` (surrounding whitespace stripped), for config key ``key_name``.

    Refused (``SecretError`` naming the key and the file) when the file is missing, readable or
    writable by group/other, owned by someone else, or empty."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise SecretError(f"{key_name}: cannot read key file {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{key_name}: key file {path} is not a regular file")
    perms = stat.S_IMODE(st.st_mode)
    if perms & 0o077:
        raise SecretError(f"{key_name}: key file {path} is accessible by group/others (mode {perms:04o}); "
                          f"it must be readable only by its owner: chmod 600 {path}")
    if hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0):
        raise SecretError(f"{key_name}: key file {path} is owned by uid {st.st_uid}, not by this user "
                          f"(uid {os.geteuid()})")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"{key_name}: cannot read key file {path}: {e}") from None
    if not value:
        raise SecretError(f"{key_name}: key file {path} is empty")
    return value


def resolve_secret(key_name: str, *, value: str = "", file: str = "", env_var: str | None = None,
                   environ: Mapping[str, str] | None = None, base_dir: str | os.PathLike | None = None) -> str:
    """The effective secret for config key ``key_name``: ``$env_var`` > key file > inline value.

    ``file`` relative paths are taken from ``base_dir``. Returns "" when none is set."""
    environ = os.environ if environ is None else environ
    if env_var and environ.get(env_var):
        resolved, source = environ[env_var], f"${env_var}"
    elif file:
        p = Path(file).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        resolved, source = read_secret_file(p, f"{key_name}_file"), str(p)
    else:
        resolved, source = value, key_name
    if resolved == REDACTED:
        raise SecretError(f"{key_name}: the value from {source} is the redaction placeholder {REDACTED!r} "
                          f"(a config backup or `config show` output?); keys are never written to backups: "
                          f"set the real key again, or use {key_name}_file"
                          + (f" or ${env_var}" if env_var else ""))
    return resolved
