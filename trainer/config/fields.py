"""The dataclass field helper every config section uses: a default plus validation metadata."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def f(default: Any = None, *, factory: Any = None, **meta: Any) -> Any:
    """A dataclass field with validation metadata (``choices``, ``min``, ``max``, ``exclusive_min``;
    ``secret=True``: never shown, see the module docstring)."""
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
