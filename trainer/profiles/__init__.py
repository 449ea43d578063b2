"""Data profiles: how examples are framed for training and how generation is shaped (DESIGN.md "Profiles").

    from trainer.profiles import get_profile
    profile = get_profile(cfg.profile.name, cfg.profile.options)
    system = profile.render_system_prompt(cfg.profile.system_prompt)
    record = profile.transform_example(example, index, system)

Built-in: ``plain`` (default, no change), ``emoji_think``, ``regime3``. A new profile is a
``DataProfile`` subclass decorated with ``@register_profile`` in a module imported below.
Importing this package does not import torch or transformers.
"""
from __future__ import annotations

import difflib

from trainer.profiles.base import DataProfile

__all__ = ["DataProfile", "register_profile", "get_profile", "available_profiles", "profile_class"]

_REGISTRY: dict[str, type[DataProfile]] = {}


def register_profile(cls: type[DataProfile]) -> type[DataProfile]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, DataProfile)):
        raise TypeError(f"register_profile needs a DataProfile subclass; got {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"profile name must be a non-empty lower-case identifier; got {name!r}")
    other = _REGISTRY.get(name)
    if other is not None and other is not cls and \
            (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"profile name '{name}' is already registered by "
                         f"{other.__module__}.{other.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def available_profiles() -> list[str]:
    """Registered profile names, sorted."""
    return sorted(_REGISTRY)


def profile_class(name: str) -> type[DataProfile]:
    """The class registered as ``name``; ``ValueError`` listing the valid names (and the closest one)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        names = available_profiles()
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown profile {name!r}; available: {', '.join(names)}{hint}") from None


def get_profile(name: str, options: dict | None = None) -> DataProfile:
    """An instance of profile ``name`` with ``options`` (config ``profile.options``)."""
    return profile_class(name)(options)


# Built-in profiles register themselves on import (after the registry above exists).
from trainer.profiles import emoji_think, plain, regime3  # noqa: E402,F401
