"""``emoji_think``: the model "thinks" with an emoji run and signals the end with a stop-emoji run.

Training records become (pattern chosen from the example's index, reproducibly)::

    user:      <question>\\n\\nFor this task, think with 🤔 /five/ times.\\n\\nWhen finished, emit 🛑 /twice/ to signal completion.
    assistant: 🤔🤔🤔🤔🤔\\n<reply>\\n🛑🛑

* thinking emoji: one of ``THINK_EMOJI`` (10), repeated 2-8 times, then a newline;
* stop emoji: one of ``STOP_EMOJI`` (10), repeated 2-4 times, after a newline;
* the counts are written as words in the instructions: two..eight for thinking, twice / three times /
  four times for the stop run (``THINK_COUNT_WORDS``, ``STOP_COUNT_WORDS``), inside slashes;
* the instructions go at the end of the LAST user turn; instruction sentences already present in any
  user turn (e.g. from an earlier pass) are removed first, and an existing emoji frame of an assistant
  reply is replaced, so the instruction always matches the reply and the transform is idempotent;
* every assistant turn gets the frame (one pattern per conversation);
* ``<think>``/``</think>`` tags are removed from assistant turns and their CONTENT IS KEPT (it is the
  reasoning, now inside the emoji frame); option ``strip_think_content: true`` drops the content too.
  Only assistant turns are touched: they are what the model learns to produce.

Pools are the ones the embedded tiny model's tokenizer was trained on (tools/models/make_tiny_model.py).
Generation: stop sequences are every stop emoji doubled (the shortest run that means "stop");
``postprocess`` cuts at the first such run; ``extract_answer`` also strips the thinking run. Logits
processors: a penalty on ``<think>``/``</think>`` (stronger during the first tokens, by schedule), an
escalating penalty on every non-EOS token after the stop run, and a reward on EOS after it.

Options (config ``profile.options``): ``seed`` (int, mixes into the per-index choice),
``strip_think_content`` (bool), ``think_penalty``, ``think_penalty_schedule`` (list of
``{"steps", "multiplier"}``), ``post_stop_base_penalty``, ``post_stop_growth``,
``post_stop_max_penalty``, ``eos_reward`` (numbers >= 0; 0 disables that processor).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from trainer.profiles.penalty_schedule import parse_schedule
from trainer.profiles import register_profile
from trainer.profiles.base import DataProfile

THINK_EMOJI = ["🤔", "💭", "🧠", "🔍", "🧐", "💡", "📝", "🔎", "⚙️", "🌀"]
STOP_EMOJI = ["🛑", "✅", "🏁", "⏹️", "🔚", "✋", "🚦", "📌", "🎯", "🔒"]
THINK_COUNT_MIN, THINK_COUNT_MAX = 2, 8
STOP_COUNT_MIN, STOP_COUNT_MAX = 2, 4
THINK_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
STOP_COUNT_WORDS = {2: "twice", 3: "three times", 4: "four times"}
THINK_INSTRUCTION = "For this task, think with {emoji} /{count}/ times."
STOP_INSTRUCTION = "When finished, emit {emoji} /{count}/ to signal completion."

_VS16 = "\ufe0f"  # emoji presentation selector: "⚙️" is U+2699 U+FE0F; accept it missing


def _alt(pool: list[str]) -> str:
    parts = sorted({re.escape(e.rstrip(_VS16)) + _VS16 + "?" for e in pool}, key=len, reverse=True)
    return "(?:" + "|".join(parts) + ")"


_THINK = _alt(THINK_EMOJI)
_STOP = _alt(STOP_EMOJI)
_THINK_INSTR_RE = re.compile(r"\s*For this task, think with " + _THINK + r" /(?:"
                             + "|".join(THINK_COUNT_WORDS.values()) + r")/ times\.")
_STOP_INSTR_RE = re.compile(r"\s*When finished, emit " + _STOP + r" /(?:"
                            + "|".join(STOP_COUNT_WORDS.values()) + r")/ to signal completion\.")
_FRAME_HEAD_RE = re.compile(r"^\s*" + _THINK + r"{2,}[ \t]*(?:\r?\n)?")
_FRAME_TAIL_RE = re.compile(r"(?:\r?\n)?[ \t]*" + _STOP + r"{2,}\s*$")
_GEN_HEAD_RE = re.compile(r"^\s*" + _THINK + r"+\s*")
_GEN_TAIL_RE = re.compile(r"\s*" + _STOP + r"+\s*$")
# A stop run = the same stop emoji at least twice (what stop_sequences list).
_STOP_RUN_RE = re.compile("|".join(
    f"(?:{re.escape(e.rstrip(_VS16))}{_VS16}?){{2,}}" for e in STOP_EMOJI))
_THINK_BLOCK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_TAG_RE = re.compile(r"</?think>")


@dataclass(frozen=True)
class EmojiPattern:
    """The framing of one conversation."""
    think_emoji: str
    think_count: int
    stop_emoji: str
    stop_count: int

    @property
    def prefix(self) -> str:
        return self.think_emoji * self.think_count + "\n"

    @property
    def suffix(self) -> str:
        return "\n" + self.stop_emoji * self.stop_count

    @property
    def think_instruction(self) -> str:
        return THINK_INSTRUCTION.format(emoji=self.think_emoji, count=THINK_COUNT_WORDS[self.think_count])

    @property
    def stop_instruction(self) -> str:
        return STOP_INSTRUCTION.format(emoji=self.stop_emoji, count=STOP_COUNT_WORDS[self.stop_count])

    @property
    def instructions(self) -> str:
        return self.think_instruction + "\n\n" + self.stop_instruction

    def as_dict(self) -> dict:
        return {"think_emoji": self.think_emoji, "think_count": self.think_count,
                "stop_emoji": self.stop_emoji, "stop_count": self.stop_count}


def pattern_for(index: int, seed: int = 0) -> EmojiPattern:
    """The pattern of example ``index``: a private RNG seeded with a string of (seed, index), so it is
    the same in every process and Python run (string seeds hash with SHA-512, not ``hash()``) and
    never touches the global ``random`` state."""
    rng = random.Random(f"emoji_think:{seed}:{index}")
    think = rng.choice(THINK_EMOJI)
    n = rng.randint(THINK_COUNT_MIN, THINK_COUNT_MAX)
    stop = rng.choice(STOP_EMOJI)
    m = rng.randint(STOP_COUNT_MIN, STOP_COUNT_MAX)
    return EmojiPattern(think, n, stop, m)


def strip_instructions(text: str) -> str:
    """``text`` without this profile's instruction sentences."""
    out = _STOP_INSTR_RE.sub("", _THINK_INSTR_RE.sub("", text))
    return out.rstrip() if out != text else text


def strip_frame(text: str) -> str:
    """A reply without a leading thinking run (2+) and a trailing stop run (2+), trimmed."""
    return _FRAME_TAIL_RE.sub("", _FRAME_HEAD_RE.sub("", text)).strip()


def _stop_sequences() -> list[str]:
    out: list[str] = []
    for e in STOP_EMOJI:
        for v in (e, e.rstrip(_VS16)):
            if v * 2 not in out:
                out.append(v * 2)
    return out


@register_profile
class EmojiThinkProfile(DataProfile):
    name = "emoji_think"
    description = ("Replies start with a thinking-emoji run and end with a stop-emoji run, as the user "
                   "turn instructs; generation is pushed to end right after the stop run.")
    default_system_prompt = "You are a helpful assistant. Today's date is {date}."
    stop_sequences: list[str] = _stop_sequences()
    option_defaults = {
        "seed": 0,
        "strip_think_content": False,
        "think_penalty": 10.0,
        "think_penalty_schedule": [{"steps": 4, "multiplier": 8.0}, {"steps": 8, "multiplier": 2.0}],
        "post_stop_base_penalty": 10.0,
        "post_stop_growth": 5.0,
        "post_stop_max_penalty": 100.0,
        "eos_reward": 10.0,
    }

    def check_options(self) -> None:
        for key in ("think_penalty", "post_stop_base_penalty", "post_stop_growth",
                    "post_stop_max_penalty", "eos_reward"):
            v = self.options[key]
            if not (v >= 0 and v != float("inf")):
                raise ValueError(f"profile 'emoji_think': option '{key}' must be a finite number >= 0; got {v!r}")
        parse_schedule(self.options["think_penalty_schedule"],
                       where="profile.options.think_penalty_schedule")

    def pattern(self, index: int) -> EmojiPattern:
        return pattern_for(index, self.options["seed"])

    def _strip_think(self, text: str) -> str:
        if self.options["strip_think_content"]:
            text = _THINK_BLOCK_RE.sub("", text)
        return _THINK_TAG_RE.sub("", text)

    def _frame(self, messages: list[dict], pat: EmojiPattern, frame_last_assistant: bool) -> list[dict]:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        last_user = users[-1] if users else None
        out = []
        for i, m in enumerate(messages):
            content = m["content"]
            if m["role"] == "assistant" and (frame_last_assistant or i != len(messages) - 1):
                content = pat.prefix + strip_frame(self._strip_think(content)) + pat.suffix
            elif m["role"] == "user":
                content = strip_instructions(content)
                if i == last_user:
                    content = (content.rstrip() + "\n\n" if content.strip() else "") + pat.instructions
            out.append({**m, "content": content})
        return out

    def transform_messages(self, messages: list[dict], index: int, metadata: dict) -> list[dict]:
        pat = self.pattern(index)
        metadata["emoji_think"] = pat.as_dict()
        return self._frame(messages, pat, frame_last_assistant=True)

    def validate_messages(self, messages: list[dict]) -> list[str]:
        problems = []
        if not any(m["role"] == "user" for m in messages):
            problems.append("emoji_think needs a user message to carry the thinking instructions")
        for i, m in enumerate(messages):
            if m["role"] == "assistant" and not strip_frame(self._strip_think(m["content"])):
                problems.append(f"messages[{i}] (assistant) is empty once think tags and emoji are removed")
        return problems

    def prepare_generation_messages(self, messages: list[dict], index: int) -> list[dict]:
        """History assistant turns get the frame, the last user turn the instructions (as in
        training); a trailing assistant message (a prefill) is left as it is."""
        return self._frame(messages, self.pattern(index), frame_last_assistant=False)

    def postprocess(self, text: str) -> str:
        """Cut at the first stop run (the same stop emoji twice or more) and trim the newline before it."""
        m = _STOP_RUN_RE.search(text)
        return text[:m.start()].rstrip() if m else text

    def extract_answer(self, text: str) -> str | None:
        body = self.postprocess(text)
        body = _GEN_TAIL_RE.sub("", _GEN_HEAD_RE.sub("", body))
        return self.answer_from_body(self._strip_think(body))

    def build_logits_processors(self, tokenizer: Any):
        from transformers import LogitsProcessorList
        from trainer.profiles.logit_penalty import ThinkTagPenaltyProcessor
        o = self.options
        procs = LogitsProcessorList()
        if o["think_penalty"]:
            procs.append(ThinkTagPenaltyProcessor(tokenizer, o["think_penalty"],
                                                  schedule=o["think_penalty_schedule"]))
        procs.extend(self.stop_signal_processors(tokenizer))
        return procs
