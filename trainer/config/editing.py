"""Validated, atomic edits of config.json (dotted keys), with a backup of the previous file.

Protected keys (``PROTECTED_KEYS``: they change what "the model" is) need ``force=True``.
"""
from __future__ import annotations

import json
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foundation.atomic_io import atomic_write_text
from trainer.config.keys import redact_config
from trainer.config.loader import (FLAT_KEYS, ConfigError, deep_merge, env_overrides, get_dotted,
                                   migrate_flat_keys, note_flat_key, read_config_file, set_dotted, validate_dict)
from trainer.config.schema import PROTECTED_KEYS


class ProtectedKeyError(PermissionError):
    pass


def _leaf_name(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def is_protected(key: str) -> bool:
    return key in PROTECTED_KEYS or _leaf_name(key) in {_leaf_name(k) for k in PROTECTED_KEYS}


def edit_config(config_file: str | Path, key: str, value: Any, *, force: bool = False,
                backups_dir: str | Path | None = None) -> dict:
    """Set ``key`` (dotted) to ``value`` in ``config_file``. Returns the change made.

    The new file must validate (including the unknown-key check) before anything is written; the
    previous file is copied to ``backups/config-<timestamp>.json`` first (API keys redacted, see
    ``_write_backup``); the write is atomic and keeps the file's mode. In the returned change, the
    old and new values of a secret key are shown as ``"***"``."""
    config_file = Path(config_file)
    if key in FLAT_KEYS:  # the seed's `edit_config.py batch_size 16`
        note_flat_key(key, FLAT_KEYS[key], str(config_file))
        key = FLAT_KEYS[key]
    if is_protected(key) and not force:
        raise ProtectedKeyError(f"'{key}' is protected (changing it changes the model lineage); "
                                f"pass --force to change it anyway")
    data = read_config_file(config_file)
    try:
        old = get_dotted(data, key)
    except KeyError:
        old = None
    new_data = json.loads(json.dumps(data))
    set_dotted(new_data, key, value)
    validate_dict(new_data, str(config_file))  # raises ConfigError naming the key
    backup = backup_config(config_file, backups_dir)
    atomic_write_text(config_file, json.dumps(new_data, indent=2, ensure_ascii=False) + "\n")  # keeps the mode
    return {"key": key, "old": _shown(key, old), "new": _shown(key, value), "file": str(config_file),
            "backup": str(backup) if backup else None}


def backup_config(config_file: str | Path, backups_dir: str | Path | None = None) -> Path | None:
    """Copy ``config_file`` to ``<backups_dir>/config-<UTC stamp>.json`` (None when there is no file)."""
    config_file = Path(config_file)
    if not config_file.exists():
        return None
    bdir = Path(backups_dir) if backups_dir else config_file.parent / "backups"
    bdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    backup = bdir / f"config-{stamp}.json"
    _write_backup(config_file, backup)
    return backup


def migrate_config(config_file: str | Path, backups_dir: str | Path | None = None) -> dict:
    """Rewrite the seed's flat keys (``batch_size`` ...) and renamed keys as their current keys, after a backup.
    The result must validate before anything is written. Returns ``{"moved": [[flat, dotted]...],
    "backup": path or None, "file": path}``; nothing is written when nothing is flat."""
    config_file = Path(config_file)
    raw = read_config_file(config_file, flat_keys=False)
    new_data, moved = migrate_flat_keys(raw, str(config_file))
    if not moved:
        return {"moved": [], "backup": None, "file": str(config_file)}
    validate_dict(new_data, str(config_file))
    original = json.loads(config_file.read_text(encoding="utf-8"))  # keep "$schema" / "_comment"
    keep = {k: original[k] for k in ("$schema", "_comment") if k in original}
    backup = backup_config(config_file, backups_dir)
    atomic_write_text(config_file, json.dumps({**keep, **new_data}, indent=2, ensure_ascii=False) + "\n")
    return {"moved": [list(m) for m in moved], "backup": str(backup) if backup else None, "file": str(config_file)}


def _shown(key: str, value: Any) -> Any:
    """``value`` as it may be printed when it sits at dotted ``key`` (secrets become "***")."""
    holder: dict = {}
    set_dotted(holder, key, value)
    return get_dotted(redact_config(holder), key)


def _write_backup(config_file: Path, backup: Path) -> None:
    """The previous config as a restore point, with its mode, and with API keys redacted: a
    backups/ folder collects copies that outlive key rotation, so keys must not pile up there (a
    restored backup needs its keys set again; the placeholder is refused where keys are used)."""
    raw = config_file.read_bytes()
    data = json.loads(raw)  # read_config_file parsed it already
    redacted = redact_config(data)
    if redacted == data:
        shutil.copy2(config_file, backup)  # byte-for-byte, mode and times included
    else:
        mode = stat.S_IMODE(config_file.stat().st_mode)
        atomic_write_text(backup, json.dumps(redacted, indent=2, ensure_ascii=False) + "\n", mode=mode)


def check_config_file(config_file: str | Path, environ=None) -> list[str]:
    """All problems of a config file (plus environment overrides); [] when valid."""
    try:
        data = read_config_file(config_file)
        if not Path(config_file).exists():
            return [f"{config_file}: no such file"]
        validate_dict(deep_merge(data, env_overrides(environ)), str(config_file))
    except ConfigError as e:
        return list(e.problems)
    return []
