"""``plain``: the default profile. Records are only normalized (and given the configured system prompt,
when one is set); generation is not shaped. No options."""
from __future__ import annotations

from trainer.profiles import register_profile
from trainer.profiles.base import DataProfile


@register_profile
class PlainProfile(DataProfile):
    name = "plain"
    description = "No change: chat records are trained and generated as they are."
    default_system_prompt = ""
    stop_sequences: list[str] = []
