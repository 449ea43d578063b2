"""Validate a chat-completion request body before any model work is done.

Two stages: ``parse_chat_request`` checks the JSON shape (pure, no model needed), then
``bind_to_model`` renders the chat template with the active profile and checks the token budget
against the loaded model's context window. Every failure is an ``APIError`` (4xx) naming the
offending field in ``param``, so a client's mistake is never a 500.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from inference.errors import APIError, INVALID_REQUEST, NOT_FOUND, bad_request

MAX_BODY_BYTES = 1024 * 1024
ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4
# Accepted for compatibility with OpenAI clients and ignored (they do not change the output).
IGNORED_FIELDS = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort"}
KNOWN_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
                "seed", "n", "stream", "stream_options", "presence_penalty", "frequency_penalty",
                "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice", "functions",
                "function_call", "response_format"} | IGNORED_FIELDS


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    # filled by bind_to_model
    prompt_ids: list[int] = field(default_factory=list)
    stop_all: list[str] = field(default_factory=list)


def parse_json_body(raw: bytes) -> dict:
    if len(raw) > MAX_BODY_BYTES:
        raise APIError(413, f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES} bytes (1 MiB)",
                       INVALID_REQUEST, None, "request_too_large")
    if not raw.strip():
        raise bad_request("request body is empty; expected a JSON object", None, "invalid_json")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise bad_request("request body is not valid UTF-8", None, "invalid_json")
    except json.JSONDecodeError as e:
        raise bad_request(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                          None, "invalid_json")
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {type(body).__name__}", None, "invalid_json")
    return body


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if not _is_num(v):
        raise bad_request(f"'{name}' must be a number, got {json.dumps(v)[:40]}", name, "invalid_type")
    if not (lo <= v <= hi):
        raise bad_request(f"'{name}' is {v}; must be between {lo} and {hi}", name)
    return float(v)


def _content_text(content: Any, i: int) -> str:
    param = f"messages[{i}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{param}[{j}] must be a text part {{\"type\": \"text\", \"text\": ...}}; "
                                  f"got {kind!r} (only text is supported)", f"{param}[{j}]", "invalid_type")
            parts.append(part["text"])
        return "".join(parts)
    raise bad_request(f"{param} must be a string or a list of text parts, got "
                      f"{'null' if content is None else type(content).__name__}", param, "invalid_type")


def parse_chat_request(body: dict, default_model: str = "") -> ChatRequest:
    """Shape checks of an OpenAI chat-completion body (no tokenizer needed)."""
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise bad_request(f"unrecognized request argument(s): {', '.join(unknown)}", unknown[0], "unknown_parameter")
    for unsupported in ("tools", "tool_choice", "functions", "function_call"):
        if body.get(unsupported) not in (None, [], "none"):
            raise bad_request(f"'{unsupported}' is not supported by this server", unsupported, "unsupported_parameter")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        raise bad_request("'logprobs' is not supported by this server", "logprobs", "unsupported_parameter")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise bad_request("only response_format {\"type\": \"text\"} is supported", "response_format",
                          "unsupported_parameter")

    model = body.get("model", default_model)
    if model is None:
        model = default_model
    if not isinstance(model, str):
        raise bad_request(f"'model' must be a string, got {type(model).__name__}", "model", "invalid_type")

    if "messages" not in body:
        raise bad_request("'messages' is required", "messages", "missing_required_parameter")
    msgs = body["messages"]
    if not isinstance(msgs, list):
        raise bad_request(f"'messages' must be a list, got {type(msgs).__name__}", "messages", "invalid_type")
    if not msgs:
        raise bad_request("'messages' must contain at least one message", "messages", "empty_array")
    clean: list[dict] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad_request(f"messages[{i}] must be an object, got {type(m).__name__}", f"messages[{i}]",
                              "invalid_type")
        role = m.get("role")
        if role is None:
            raise bad_request(f"messages[{i}].role is required", f"messages[{i}].role", "missing_required_parameter")
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(f"messages[{i}].role is {json.dumps(role)[:40]}; allowed: {', '.join(ROLES)}",
                              f"messages[{i}].role", "invalid_role")
        if m.get("tool_calls") or m.get("function_call"):
            raise bad_request(f"messages[{i}] has tool calls; tools are not supported", f"messages[{i}]",
                              "unsupported_parameter")
        if "content" not in m:
            raise bad_request(f"messages[{i}].content is required", f"messages[{i}].content",
                              "missing_required_parameter")
        text = _content_text(m["content"], i)
        clean.append({"role": "system" if role == "developer" else role, "content": text})

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    mt_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is not None:
        if not _is_int(max_tokens):
            raise bad_request(f"'{mt_name}' must be an integer, got {json.dumps(max_tokens)[:40]}", mt_name,
                              "invalid_type")
        if max_tokens <= 0:
            raise bad_request(f"'{mt_name}' is {max_tokens}; must be >= 1", mt_name)

    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    presence = _number(body, "presence_penalty", 0.0, -2.0, 2.0)
    frequency = _number(body, "frequency_penalty", 0.0, -2.0, 2.0)

    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise bad_request("'stop' must be a string or a list of strings", "stop", "invalid_type")
    if len(stops) > MAX_STOP:
        raise bad_request(f"'stop' has {len(stops)} sequences; at most {MAX_STOP} are allowed", "stop")
    if any(s == "" for s in stops):
        raise bad_request("'stop' sequences must not be empty strings", "stop")

    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_request(f"'seed' must be an integer, got {json.dumps(seed)[:40]}", "seed", "invalid_type")
    if seed is not None and not (-2**63 <= seed < 2**63):
        raise bad_request("'seed' must fit in 64 bits", "seed")

    n = body.get("n")
    if n is not None:
        if not _is_int(n):
            raise bad_request(f"'n' must be an integer, got {json.dumps(n)[:40]}", "n", "invalid_type")
        if n != 1:
            raise bad_request(f"'n' is {n}; only n=1 is supported", "n")

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request(f"'stream' must be a boolean, got {json.dumps(stream)[:40]}", "stream", "invalid_type")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not isinstance(so, dict) or not isinstance(so.get("include_usage", False), bool):
            raise bad_request("'stream_options' must be an object like {\"include_usage\": true}", "stream_options",
                              "invalid_type")
        if not stream:
            raise bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options")
        include_usage = bool(so.get("include_usage", False))

    bias: dict[int, float] = {}
    lb = body.get("logit_bias")
    if lb is not None:
        if not isinstance(lb, dict):
            raise bad_request("'logit_bias' must be an object mapping token ids to numbers", "logit_bias",
                              "invalid_type")
        for k, v in lb.items():
            try:
                tid = int(k)
            except (TypeError, ValueError):
                raise bad_request(f"'logit_bias' key {k!r} is not a token id", "logit_bias", "invalid_type")
            if not _is_num(v) or not -100 <= v <= 100:
                raise bad_request(f"'logit_bias' value for {k} must be a number in [-100, 100]", "logit_bias")
            bias[tid] = float(v)

    return ChatRequest(model=model, messages=clean, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                       stop=stops, seed=seed, stream=stream, include_usage=include_usage,
                       presence_penalty=presence, frequency_penalty=frequency, logit_bias=bias)


def accepted_model_ids(engine: Any) -> set[str]:
    return {engine.model_id, engine.version, f"{engine.model_id}@{engine.version}"}


def bind_to_model(req: ChatRequest, engine: Any, default_max_tokens: int) -> ChatRequest:
    """Check the model id, render the prompt with the profile, and check the token budget."""
    from inference import profile_adapter

    if req.model and req.model not in accepted_model_ids(engine):
        raise APIError(404, f"model {req.model!r} does not exist; this server serves {engine.model_id!r} "
                            f"(version {engine.version!r})", NOT_FOUND, "model", "model_not_found")
    vocab = int(getattr(engine.model.config, "vocab_size", 0) or len(engine.tokenizer))
    for tid in req.logit_bias:
        if not 0 <= tid < vocab:
            raise bad_request(f"'logit_bias' token id {tid} is outside the vocabulary (0..{vocab - 1})",
                              "logit_bias")
    try:
        msgs = profile_adapter.prepare_messages(engine.profile, [dict(m) for m in req.messages],
                                                engine.system_prompt)
    except ValueError as e:  # the profile's own message checks (e.g. ordering of roles)
        raise bad_request(f"messages rejected by profile {engine.profile_name!r}: {e}", "messages",
                          "invalid_messages")
    try:
        text = engine.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # noqa: BLE001 - a template that rejects these messages is the client's input
        raise bad_request(f"the model's chat template rejected these messages: {e}", "messages", "invalid_messages")
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    ctx = engine.context_window
    if len(ids) >= ctx:
        raise bad_request(f"the prompt is {len(ids)} tokens; this model's context window is {ctx} tokens",
                          "messages", "context_length_exceeded")
    if req.max_tokens is not None and req.max_tokens >= ctx:
        raise bad_request(f"'max_tokens' is {req.max_tokens}; this model's context window is {ctx} tokens",
                          "max_tokens", "context_length_exceeded")
    max_tokens = req.max_tokens if req.max_tokens is not None else min(default_max_tokens, ctx - len(ids))
    if len(ids) + max_tokens > ctx:
        raise bad_request(f"the prompt is {len(ids)} tokens and max_tokens is {max_tokens}: {len(ids) + max_tokens} "
                          f"is over the context window of {ctx} tokens", "messages", "context_length_exceeded")
    req.max_tokens = max_tokens
    req.prompt_ids = list(ids)
    seen = set()
    req.stop_all = [s for s in (*req.stop, *engine.stop_sequences) if not (s in seen or seen.add(s))]
    return req
