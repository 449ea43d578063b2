"""Reading another sidecar's status file with a clear account of what is wrong with it.

``foundation.atomic_io.read_json`` answers None for a missing and for a malformed file alike; a
sidecar that depends on the file must say which it is (in its own status), and keep running.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_input(path: str | Path) -> tuple[dict | None, str | None]:
    """(document, None) when ``path`` holds a JSON object; (None, problem) otherwise, the problem
    naming the file and what is wrong (missing, unreadable, invalid JSON at line:col, not an object)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path.name}: missing (its writer has not run yet)"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path.name}: unreadable ({type(e).__name__}: {e})"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{path.name}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}); ignored"
    if not isinstance(doc, dict):
        return None, f"{path.name}: expected a JSON object, got {type(doc).__name__}; ignored"
    return doc, None


def as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    return x if isinstance(x, list) else []
