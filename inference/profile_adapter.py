"""The active data profile, as the server sees it: system prompt, stop sequences, logits processors.

Profiles live in ``trainer/profiles`` (``DataProfile``); the server needs only these few things
from one, so it asks through this adapter and the server code stays free of profile details.
Where a reply ends (stop strings) is ``trainer.profiles.generation``'s rule, shared with the
evaluator.
"""
from __future__ import annotations

from typing import Any

from trainer.profiles import DataProfile, get_profile
from trainer.profiles.generation import profile_stop_strings


def load_profile(name: str, options: dict | None = None) -> DataProfile:
    """The profile named ``name`` with ``options`` (config ``profile.options``); ``ValueError``
    naming the valid profiles when there is none of that name."""
    return get_profile(name, options or None)


def stop_sequences(profile: DataProfile) -> list[str]:
    """The profile's stop strings (non-empty strings only)."""
    return profile_stop_strings(profile)


def render_system_prompt(profile: DataProfile, template: str | None) -> str:
    """The system prompt for a request made now: the config template (or the profile's default)
    with ``{date}`` filled in, as the trainer renders it for training examples."""
    return profile.render_system_prompt(template or None)


def prepare_messages(profile: DataProfile, messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Messages for the chat template; a profile system prompt replaces a leading system message."""
    system_prompt = render_system_prompt(profile, system_prompt)
    return profile.prepare_messages(messages, index=0, system_prompt=system_prompt or None)


def logits_processors(profile: DataProfile, tokenizer: Any) -> list:
    """A fresh processor list per request: processors may keep per-generation state."""
    return list(profile.build_logits_processors(tokenizer) or [])


def postprocess(profile: DataProfile, text: str) -> str:
    return profile.postprocess(text)
