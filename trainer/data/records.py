"""One training record in, one normalized record out (or a ``RecordError`` naming the field).

Every input format the system accepts is reduced here to one of two shapes, so that the
validator, the converters and the tokenizer each handle exactly one shape:

* chat:  ``{"messages": [{"role": "system|user|assistant", "content": str}, ...], "metadata": {...}}``
* text:  ``{"text": str, "metadata": {...}}`` (raw text, loss on every token)

Accepted inputs: ``{"messages": [...]}`` (multi-turn), ``{"prompt", "completion"}`` (strings, or
lists of messages as in TRL's conversational prompt-completion), alpaca
``{"instruction", "input", "output"}`` (+ optional ``"system"``) and ``{"text"}``. An optional
``"metadata"`` object is carried through untouched. Pure Python (no torch) so CLIs stay fast.
"""
from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")
FORMATS = ("auto", "messages", "prompt_completion", "alpaca", "text")


class RecordError(ValueError):
    """A record that cannot be trained on. ``field`` is a path into the record such as
    ``messages[2].role``; ``reason`` is a stable machine-readable code (see the validator)."""

    def __init__(self, field: str, reason: str, message: str):
        self.field = field
        self.reason = reason
        self.message = message
        super().__init__(f"{field or '<record>'}: {reason}: {message}")


def detect_format(obj: dict) -> str | None:
    """The input format of a parsed JSON object, or None when it has none of the known keys.
    ``messages`` wins over the others, so a chat record with extra keys stays a chat record."""
    if "messages" in obj:
        return "messages"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    if "text" in obj:
        return "text"
    return None


def normalize_record(obj: Any, *, format: str = "auto") -> dict:
    """Normalize one parsed JSON value (see the module docstring). ``format`` forces one input
    format (the converters' ``--format``); a record of another format is then an error."""
    if not isinstance(obj, dict):
        raise RecordError("", "not_object", f"a record must be a JSON object, got {_type_name(obj)}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    kind = detect_format(obj)
    if kind is None:
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise RecordError("messages", "missing_messages",
                          "no 'messages' field (nor prompt/completion, instruction/output or text); "
                          f"keys present: {keys}")
    if format != "auto" and kind != format:
        raise RecordError("", "format_mismatch", f"expected a {format} record, got a {kind} record")
    metadata = _metadata(obj)
    if kind == "messages":
        messages = _check_messages(obj["messages"], "messages", require_assistant=True)
    elif kind == "prompt_completion":
        messages = _from_prompt_completion(obj)
    elif kind == "alpaca":
        messages = _from_alpaca(obj)
    else:
        text = obj["text"]
        if text is None:
            raise RecordError("text", "missing_content", "'text' is null")
        if not isinstance(text, str):
            raise RecordError("text", "non_string_content", f"'text' must be a string, got {_type_name(text)}")
        if not text.strip():
            raise RecordError("text", "empty_text", "'text' is empty")
        return {"text": text, "metadata": metadata}
    return {"messages": messages, "metadata": metadata}


def is_chat(record: dict) -> bool:
    """True for a normalized chat record, False for a text record."""
    return "messages" in record


def content_key(record: dict) -> str:
    """What makes two examples the same training example (metadata does not count); used to
    find exact duplicates."""
    import json
    body = {"messages": record["messages"]} if is_chat(record) else {"text": record["text"]}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- helpers
def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _metadata(obj: dict) -> dict:
    md = obj.get("metadata")
    if md is None:
        return {}
    if not isinstance(md, dict):
        raise RecordError("metadata", "invalid_metadata", f"'metadata' must be an object, got {_type_name(md)}")
    return md


def _check_messages(messages: Any, field: str, *, require_assistant: bool) -> list[dict]:
    if messages is None:
        raise RecordError(field, "missing_messages", f"'{field}' is null")
    if not isinstance(messages, list):
        raise RecordError(field, "invalid_messages", f"'{field}' must be an array, got {_type_name(messages)}")
    if not messages:
        raise RecordError(field, "empty_messages", f"'{field}' is an empty array")
    out: list[dict] = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RecordError(where, "invalid_message", f"a message must be an object, got {_type_name(m)}")
        if "role" not in m or m["role"] is None:
            raise RecordError(f"{where}.role", "missing_role", "message has no 'role'")
        role = m["role"]
        if role not in ROLES:
            raise RecordError(f"{where}.role", "unknown_role",
                              f"role {role!r} is not one of {', '.join(ROLES)}")
        if "content" not in m or m["content"] is None:
            raise RecordError(f"{where}.content", "missing_content", f"{role} message has no 'content'")
        content = m["content"]
        if not isinstance(content, str):
            raise RecordError(f"{where}.content", "non_string_content",
                              f"'content' must be a string, got {_type_name(content)}")
        if role == "assistant" and not content.strip():
            raise RecordError(f"{where}.content", "empty_assistant", "assistant message is empty")
        out.append({"role": role, "content": content})
    if require_assistant and not any(m["role"] == "assistant" for m in out):
        raise RecordError(field, "no_assistant_turn", "no assistant message: nothing to learn")
    return out


def _string_field(obj: dict, key: str, *, required: bool, reason_if_missing: str = "missing_field") -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise RecordError(key, reason_if_missing, f"'{key}' is missing")
        return None
    v = obj[key]
    if not isinstance(v, str):
        raise RecordError(key, "non_string_content", f"'{key}' must be a string, got {_type_name(v)}")
    return v


def _from_prompt_completion(obj: dict) -> list[dict]:
    prompt, completion = obj.get("prompt"), obj.get("completion")
    messages: list[dict] = []
    system = _string_field(obj, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    if isinstance(prompt, list):
        messages += _check_messages(prompt, "prompt", require_assistant=False)
    else:
        p = _string_field(obj, "prompt", required=True)
        messages.append({"role": "user", "content": p})
    if isinstance(completion, list):
        comp = _check_messages(completion, "completion", require_assistant=True)
        messages += comp
    else:
        c = _string_field(obj, "completion", required=True)
        if not c.strip():
            raise RecordError("completion", "empty_assistant", "'completion' is empty")
        messages.append({"role": "assistant", "content": c})
    return messages


def _from_alpaca(obj: dict) -> list[dict]:
    instruction = _string_field(obj, "instruction", required=True)
    extra = _string_field(obj, "input", required=False)
    output = _string_field(obj, "output", required=True)
    if not output.strip():
        raise RecordError("output", "empty_assistant", "'output' is empty")
    user = instruction + (f"\n\n{extra}" if extra and extra.strip() else "")
    if not user.strip():
        raise RecordError("instruction", "empty_prompt", "'instruction' and 'input' are both empty")
    messages: list[dict] = []
    system = _string_field(obj, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return messages
