"""``DataProfile``: what a profile may change, in one place.

A profile sits between the raw data and the model, on both sides:

* training: ``transform_example`` turns each record into the normalized chat record that gets
  tokenized (system prompt, profile-specific framing of the turns); ``validate_example`` says why a
  record cannot be used;
* generation (inference server, evaluators): ``prepare_messages`` builds what goes into the chat
  template, ``build_logits_processors`` shapes the decoding, ``stop_sequences`` / ``postprocess`` end
  it, ``extract_answer`` / ``normalize_answer`` score it (exact match).

Subclasses override the small hooks (``transform_messages``, ``validate_messages``,
``prepare_generation_messages``, ...) rather than the public methods, so the common rules (never
mutate the input, system prompt handling, record shapes) live here once.

This module imports neither torch nor transformers at import time: the config loader lists the
profiles in processes that never generate.
"""
from __future__ import annotations

import copy
import re
import unicodedata
from datetime import datetime
from typing import Any, ClassVar

from trainer.profiles.generation import cut_at_stop

ROLES = ("system", "user", "assistant")

_ANSWER_MARK = re.compile(r"(?i)\banswer\s*\**\s*[:\uff1a]\s*\**")
_EDGE_JUNK = " \t\r\n.,;:!?\"'`*_~"
_LEAD_CONNECTIVE = re.compile(
    r"^(?:(?:therefore|thus|hence|so|conclusion|final answer|answer)\s*[,:]?\s+)+")
_VERDICT = re.compile(
    r"^(?:(?:the\s+)?(?:argument|syllogism|conclusion|inference|reasoning|answer|it|this)\s+is\s+)?"
    r"(valid|invalid|not\s+valid)$")


def to_messages(example: Any) -> tuple[list[dict], dict]:
    """``(messages, metadata)`` from any accepted record shape, deep-copied (the input is never shared).

    Accepted: ``{"messages": [...]}``; ``{"prompt", "completion"}`` (user, assistant);
    alpaca ``{"instruction", "input"?, "output"}`` (instruction + blank line + input as the user turn);
    ``{"text"}`` (one assistant turn: the whole text is learned, like plain language modelling).
    Raises ``ValueError`` for anything else. Message dicts keep extra keys (e.g. ``name``).
    """
    if not isinstance(example, dict):
        raise ValueError(f"a record must be a JSON object; got {type(example).__name__}")
    meta = example.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ValueError(f"'metadata' must be an object; got {type(meta).__name__}")
    meta = copy.deepcopy(meta)
    if "messages" in example:
        msgs = example["messages"]
        if not isinstance(msgs, list):
            raise ValueError(f"'messages' must be a list; got {type(msgs).__name__}")
        return [copy.deepcopy(m) for m in msgs], meta
    # Every other shape is converted by the data layer's one converter (trainer/data/records.py).
    from trainer.data.records import RecordError, normalize_record
    try:
        record = normalize_record(example)
    except RecordError as e:
        raise ValueError(str(e)) from None
    if "text" in record:
        return [{"role": "assistant", "content": record["text"]}], meta
    return record["messages"], meta


def message_problems(messages: list, require_assistant: bool = True) -> list[str]:
    """Structural problems of a message list (roles, string contents, an assistant turn)."""
    problems: list[str] = []
    if not messages:
        return ["'messages' is empty"]
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"messages[{i}] must be an object; got {type(m).__name__}")
            continue
        role = m.get("role")
        if role not in ROLES:
            problems.append(f"messages[{i}].role is {role!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            problems.append(f"messages[{i}].content must be a string; got {type(m.get('content')).__name__}")
    if require_assistant and not problems and not any(m["role"] == "assistant" for m in messages):
        problems.append("no assistant message (nothing to learn)")
    return problems


class DataProfile:
    """Base profile: the identity transform. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_system_prompt: ClassVar[str] = ""
    stop_sequences: list[str] = []
    """Text that ends a generation (inference servers pass these as stop strings)."""
    option_defaults: ClassVar[dict[str, Any]] = {}
    """Valid ``profile.options`` keys and their defaults; the default's type is the required type
    (an int is accepted where a float is expected)."""

    def __init__(self, options: dict | None = None) -> None:
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ValueError(f"profile '{self.name}': options must be an object; got {type(options).__name__}")
        valid = sorted(self.option_defaults)
        for key, value in options.items():
            if key not in self.option_defaults:
                import difflib
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"profile '{self.name}': unknown option '{key}'{hint}; valid options: "
                                 f"{', '.join(valid) if valid else 'none (this profile takes no options)'}")
            self._check_type(key, value, self.option_defaults[key])
        self.options: dict[str, Any] = {**copy.deepcopy(self.option_defaults), **copy.deepcopy(options)}
        for key, default in self.option_defaults.items():
            if isinstance(default, float) and isinstance(self.options[key], int):
                self.options[key] = float(self.options[key])
        self.stop_sequences = list(type(self).stop_sequences)
        self.check_options()

    def _check_type(self, key: str, value: Any, default: Any) -> None:
        want = type(default)
        if want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, want)
        if not ok:
            raise ValueError(f"profile '{self.name}': option '{key}' must be {want.__name__}; "
                             f"got {value!r} ({type(value).__name__})")

    def check_options(self) -> None:
        """Hook: reject option values (ValueError naming the option) beyond the type check."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(options={self.options!r})"

    # ---------------------------------------------------------------- system prompt
    def render_system_prompt(self, template: str | None = None, now: datetime | None = None) -> str:
        """``template`` (empty/None: ``default_system_prompt``) with ``{date}`` replaced by YYYY-MM-DD
        (local date, or ``now``'s). Other braces are left alone (this is not ``str.format``)."""
        text = template or self.default_system_prompt
        return text.replace("{date}", (now or datetime.now()).strftime("%Y-%m-%d"))

    @staticmethod
    def apply_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
        """Override the leading system message's content, or insert one at the top; no-op when
        ``system_prompt`` is empty. The prompt is used verbatim: render ``{date}`` first (so that a
        transform stays a pure function of its inputs)."""
        if not system_prompt:
            return messages
        if messages and messages[0].get("role") == "system":
            messages[0] = {**messages[0], "content": system_prompt}
            return messages
        return [{"role": "system", "content": system_prompt}] + messages

    # ---------------------------------------------------------------- training side
    def transform_example(self, example: dict, index: int, system_prompt: str | None = None) -> dict:
        """A NEW normalized record ``{"messages": [...], "metadata": {...}}`` for example number
        ``index`` of its file (profiles that vary per example derive it from ``index`` only, so the
        same index always gives the same output). Raises ``ValueError`` listing the problems when
        ``validate_example`` would reject the record. Top-level keys other than the record shape's
        own and ``metadata`` are not carried."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"index must be an integer; got {index!r}")
        problems = self.validate_example(example)
        if problems:
            raise ValueError(f"{self.name}: example {index} cannot be used: " + "; ".join(problems))
        messages, metadata = to_messages(example)
        messages = self.apply_system_prompt(messages, system_prompt)
        messages = self.transform_messages(messages, index, metadata)
        return {"messages": messages, "metadata": metadata}

    def transform_messages(self, messages: list[dict], index: int, metadata: dict) -> list[dict]:
        """Hook: the profile's change to an already-copied message list (may edit ``metadata``)."""
        return messages

    def validate_example(self, example: dict) -> list[str]:
        """Problems that make the record unusable for this profile ([] when fine)."""
        try:
            messages, _ = to_messages(example)
        except ValueError as e:
            return [str(e)]
        problems = message_problems(messages)
        if problems:
            return problems
        return self.validate_messages(messages)

    def validate_messages(self, messages: list[dict]) -> list[str]:
        """Hook: profile-specific problems of a structurally valid message list."""
        return []

    # ---------------------------------------------------------------- generation side
    def prepare_messages(self, messages: list[dict], index: int = 0,
                         system_prompt: str | None = None) -> list[dict]:
        """The messages to render with the chat template (``add_generation_prompt=True``) for a reply.
        Returns new dicts; the caller's list is not changed."""
        problems = message_problems(messages, require_assistant=False)
        if problems:
            raise ValueError("; ".join(problems))
        msgs = [copy.deepcopy(m) for m in messages]
        msgs = self.apply_system_prompt(msgs, system_prompt)
        return self.prepare_generation_messages(msgs, index)

    def prepare_generation_messages(self, messages: list[dict], index: int) -> list[dict]:
        """Hook for ``prepare_messages``."""
        return messages

    def build_logits_processors(self, tokenizer: Any):
        """``transformers.LogitsProcessorList`` for ``model.generate``; build a fresh one per
        generation call or server (the processors keep per-generation state)."""
        from transformers import LogitsProcessorList
        return LogitsProcessorList()

    def stop_signal_processors(self, tokenizer: Any) -> list:
        """Processors that act once a stop sequence was emitted, from the options
        ``post_stop_base_penalty`` / ``post_stop_growth`` / ``post_stop_max_penalty`` (escalating
        penalty on every non-EOS token) and ``eos_reward`` (EOS made likelier)."""
        from trainer.profiles.logit_penalty import EOSRewardProcessor, PostStopPenaltyProcessor
        o = self.options
        procs: list = []
        if o["post_stop_base_penalty"] or o["post_stop_growth"]:
            procs.append(PostStopPenaltyProcessor(self.stop_sequences, o["post_stop_base_penalty"],
                                                  o["post_stop_growth"], tokenizer=tokenizer,
                                                  max_penalty=o["post_stop_max_penalty"]))
        if o["eos_reward"]:
            procs.append(EOSRewardProcessor(None, o["eos_reward"], stop_sequences=self.stop_sequences,
                                            tokenizer=tokenizer))
        return procs

    def postprocess(self, text: str) -> str:
        """``text`` cut at the earliest stop sequence (the stop sequence and everything after it go)."""
        return cut_at_stop(text, self.stop_sequences)

    # ---------------------------------------------------------------- scoring
    def extract_answer(self, text: str) -> str | None:
        """The final answer in a generated reply, or None when there is none.

        After ``postprocess``: the text after the last ``Answer:`` marker (to the end of its line), else
        the last non-empty line."""
        return self.answer_from_body(self.postprocess(text))

    @staticmethod
    def answer_from_body(body: str) -> str | None:
        marks = list(_ANSWER_MARK.finditer(body))
        if marks:
            rest = body[marks[-1].end():].strip()
            cand = rest.splitlines()[0] if rest else ""
        else:
            lines = [ln for ln in body.splitlines() if ln.strip()]
            cand = lines[-1] if lines else ""
        cand = cand.strip()
        return cand or None

    def normalize_answer(self, answer: str) -> str:
        """Canonical text for exact-match scoring of syllogism answers.

        NFKC, lower case, single spaces, surrounding punctuation / quotes / markdown emphasis removed,
        leading connectives ("therefore", "so", "answer:") dropped; a verdict sentence ("The argument is
        valid.", "not valid") becomes ``valid`` / ``invalid``. So "Therefore, all cats are mammals." and
        "all cats are mammals" compare equal."""
        text = unicodedata.normalize("NFKC", answer or "").lower()
        text = " ".join(text.split()).strip(_EDGE_JUNK)
        text = _LEAD_CONNECTIVE.sub("", text).strip(_EDGE_JUNK)
        m = _VERDICT.match(text)
        if m:
            return "valid" if m.group(1) == "valid" else "invalid"
        return text
