"""The active data profile, as the server sees it: system prompt, stop sequences, logits processors.

Profiles live in ``trainer/profiles`` (another part of the project). The server only needs four
things from one, so it talks to it through this adapter; when ``trainer.profiles`` is not available
the ``plain`` behaviour (no change at all) is used, and asking for another profile then fails loudly
instead of silently serving something else.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any

log = logging.getLogger("inference.profile")


class PlainProfile:
    """Behaves like the ``plain`` profile: messages, stops and logits are left as they are."""

    name = "plain"
    stop_sequences: list[str] = []

    def prepare_messages(self, messages: list[dict], index: int = 0, system_prompt: str | None = None) -> list[dict]:
        messages = [dict(m) for m in messages]
        if not system_prompt:
            return messages
        if messages and messages[0].get("role") == "system":
            messages[0]["content"] = system_prompt
            return messages
        return [{"role": "system", "content": system_prompt}, *messages]

    def render_system_prompt(self, template: str | None = None) -> str:
        from datetime import datetime
        return (template or "").replace("{date}", datetime.now().strftime("%Y-%m-%d"))

    def build_logits_processors(self, tokenizer: Any):
        return []

    def postprocess(self, text: str) -> str:
        return text


def load_profile(name: str, options: dict | None = None) -> Any:
    """The profile object named ``name`` (from ``trainer.profiles`` when it exists)."""
    try:
        from trainer.profiles import get_profile  # type: ignore[attr-defined]
    except ImportError:
        if name not in ("", "plain"):
            raise ValueError(f"profile {name!r} requested but trainer.profiles.get_profile is not available")
        return PlainProfile()
    params = inspect.signature(get_profile).parameters
    if options and "options" in params:
        return get_profile(name, options=options)
    return get_profile(name)


def stop_sequences(profile: Any) -> list[str]:
    stops = getattr(profile, "stop_sequences", None) or []
    if callable(stops):
        stops = stops()
    return [s for s in stops if isinstance(s, str) and s]


def render_system_prompt(profile: Any, template: str | None) -> str:
    """The system prompt for a request made now: the config template (or the profile's default)
    with ``{date}`` filled in, as the trainer renders it for training examples."""
    fn = getattr(profile, "render_system_prompt", None)
    if fn is not None:
        return fn(template or None)
    from datetime import datetime
    return (template or "").replace("{date}", datetime.now().strftime("%Y-%m-%d"))


def prepare_messages(profile: Any, messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Messages for the chat template; a profile system prompt replaces a leading system message."""
    system_prompt = render_system_prompt(profile, system_prompt)
    fn = getattr(profile, "prepare_messages", None)
    if fn is None:
        return PlainProfile().prepare_messages(messages, system_prompt=system_prompt)
    return fn(messages, index=0, system_prompt=system_prompt or None)


def logits_processors(profile: Any, tokenizer: Any) -> list:
    """A fresh processor list per request: processors may keep per-generation state."""
    fn = getattr(profile, "build_logits_processors", None)
    procs = fn(tokenizer) if fn is not None else None
    return list(procs or [])


def postprocess(profile: Any, text: str) -> str:
    fn = getattr(profile, "postprocess", None)
    return fn(text) if fn is not None else text
