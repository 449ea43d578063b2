"""The inference server's OpenAI-compatible API, through the official ``openai`` client and raw HTTP.

One real server subprocess for the whole module (tiny model, CPU, 127.0.0.1, free port).
"""
from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import openai
import pytest

from tests.helpers.inference_server import ServerProcess, deploy_version, make_base_dir

PROMPT = [{"role": "user", "content": "Repeat #1: alpha beta gamma"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    base = make_base_dir(tmp_path_factory.mktemp("inf-api") / "base", tiny_model_dir,
                         {"inference": {"default_max_tokens": 8}})
    deploy_version(tiny_model_dir, base, "v-api", make_current=True, global_step=7)
    srv = ServerProcess(base)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    yield c
    c.close()


def greedy(client, messages=PROMPT, **kw):
    kw.setdefault("max_tokens", 12)
    return client.chat.completions.create(model="tiny-qwen3", messages=messages, temperature=0, **kw)


def test_chat_completion_shape_and_usage(client):
    r = greedy(client)
    assert r.object == "chat.completion"
    assert r.model == "tiny-qwen3"
    assert r.system_fingerprint == "v-api"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # greedy is deterministic
    assert greedy(client).choices[0].message.content == choice.message.content


def test_streaming_matches_non_streaming(client):
    full = greedy(client).choices[0].message.content
    chunks = list(greedy(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    usage_chunks = [c for c in chunks if not c.choices]
    assert usage_chunks and usage_chunks[-1].usage.completion_tokens >= 1


def test_stream_ends_with_done_marker(server):
    body = {"messages": PROMPT, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["usage"]["completion_tokens"] >= 1


def test_stop_sequence_is_cut_and_stripped(client):
    full = greedy(client, max_tokens=16).choices[0].message.content
    assert len(full) >= 4, full
    stop = full[2:4]
    cut = full[:full.index(stop)]
    r = greedy(client, max_tokens=16, stop=[stop])
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in greedy(client, max_tokens=16, stop=stop, stream=True)
                       if c.choices)
    assert streamed == cut


def test_models_list_and_info(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-qwen3"]
    info = httpx.get(server.url + "/models/info").json()
    assert info["version"] == "v-api"
    assert info["global_step"] == 7
    assert info["path"] == "models/deployed/v-api"
    for key in ("model_id", "profile", "loaded_at", "parameters", "dtype", "device"):
        assert info[key] not in (None, ""), key
    from foundation.device import dtype_name, model_dtype
    want = dtype_name(model_dtype("cpu"))  # inference.precision "auto": bf16 on a native-bf16 CPU
    assert info["parameters"] > 1_000_000 and info["device"] == "cpu" and info["dtype"] == want
    assert info["packed_linears"] == 4 * 7 + 1  # the CPU serves with oneDNN-prepacked weights
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_seeded_sampling_is_reproducible(client):
    a = client.chat.completions.create(model="tiny-qwen3", messages=PROMPT, max_tokens=10, temperature=1.0,
                                       top_p=0.9, seed=123)
    b = client.chat.completions.create(model="tiny-qwen3", messages=PROMPT, max_tokens=10, temperature=1.0,
                                       top_p=0.9, seed=123)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_concurrent_requests_are_batched_and_match_sequential(client, server):
    prompts = [[{"role": "user", "content": f"Question {i}: " + "alpha beta " * i}] for i in range(8)]
    sequential = [greedy(client, p).choices[0].message.content for p in prompts]
    before = _metric(server, "inference_batch_size_sum")
    with cf.ThreadPoolExecutor(8) as ex:
        together = list(ex.map(lambda p: greedy(client, p).choices[0].message.content, prompts))
    assert together == sequential
    steps = _metric(server, "inference_batch_size_count")
    assert _metric(server, "inference_batch_size_sum") - before > 0 and steps > 0
    # at least one decode step ran more than one request at once
    text = httpx.get(server.url + "/metrics").text
    le1 = next(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('inference_batch_size_bucket{le="1.0"}'))
    assert le1 < steps


def _metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_count_requests_tokens_and_errors(server, client):
    before_tokens = _metric(server, "inference_completion_tokens_total")
    greedy(client, max_tokens=4)
    httpx.post(server.url + "/v1/chat/completions", json={"messages": []})
    text = httpx.get(server.url + "/metrics").text
    assert _metric(server, "inference_completion_tokens_total") >= before_tokens + 1
    assert 'inference_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert 'inference_errors_total{code="empty_array",type="invalid_request_error"}' in text
    for name in ("inference_request_latency_seconds_bucket", "inference_time_to_first_token_seconds_bucket",
                 "inference_reloads_total", "inference_prompt_tokens_total", "inference_queue_depth"):
        assert name in text, name


def test_openai_client_error_classes(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-qwen3", messages=[], max_tokens=4)
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=PROMPT, max_tokens=4)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-qwen3", messages=PROMPT, max_tokens=100_000)
    assert e.value.body["code"] == "context_length_exceeded"


LONG = "word " * 3000  # ~3000+ tokens: over the 2048-token context with any max_tokens

BAD_REQUESTS = [
    # (name, raw body or dict, status, error type, param)
    ("invalid json", b'{"messages": [', 400, "invalid_request_error", None),
    ("body not an object", b'[1, 2]', 400, "invalid_request_error", None),
    ("empty body", b"", 400, "invalid_request_error", None),
    ("missing messages", {"model": "tiny-qwen3"}, 400, "invalid_request_error", "messages"),
    ("messages not a list", {"messages": "hi"}, 400, "invalid_request_error", "messages"),
    ("empty messages", {"messages": []}, 400, "invalid_request_error", "messages"),
    ("message not an object", {"messages": ["hi"]}, 400, "invalid_request_error", "messages[0]"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_request_error",
     "messages[0].role"),
    ("missing role", {"messages": [{"content": "hi"}]}, 400, "invalid_request_error", "messages[0].role"),
    ("content wrong type", {"messages": [{"role": "user", "content": 42}]}, 400, "invalid_request_error",
     "messages[0].content"),
    ("image content part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "invalid_request_error", "messages[0].content[0]"),
    ("max_tokens zero", {"messages": PROMPT, "max_tokens": 0}, 400, "invalid_request_error", "max_tokens"),
    ("max_tokens negative", {"messages": PROMPT, "max_tokens": -5}, 400, "invalid_request_error", "max_tokens"),
    ("max_tokens string", {"messages": PROMPT, "max_tokens": "ten"}, 400, "invalid_request_error", "max_tokens"),
    ("max_tokens bool", {"messages": PROMPT, "max_tokens": True}, 400, "invalid_request_error", "max_tokens"),
    ("max_tokens beyond context", {"messages": PROMPT, "max_tokens": 5000}, 400, "invalid_request_error",
     "max_tokens"),
    ("prompt + max_tokens over context", {"messages": [{"role": "user", "content": "word " * 1000}],
                                          "max_tokens": 1500}, 400, "invalid_request_error", "messages"),
    ("prompt alone over context", {"messages": [{"role": "user", "content": LONG}]}, 400, "invalid_request_error",
     "messages"),
    ("temperature out of range", {"messages": PROMPT, "temperature": 3.5}, 400, "invalid_request_error",
     "temperature"),
    ("temperature string", {"messages": PROMPT, "temperature": "hot"}, 400, "invalid_request_error", "temperature"),
    ("top_p above one", {"messages": PROMPT, "top_p": 1.5}, 400, "invalid_request_error", "top_p"),
    ("n above one", {"messages": PROMPT, "n": 2}, 400, "invalid_request_error", "n"),
    ("stop wrong type", {"messages": PROMPT, "stop": 7}, 400, "invalid_request_error", "stop"),
    ("too many stops", {"messages": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_request_error", "stop"),
    ("stream not bool", {"messages": PROMPT, "stream": "yes"}, 400, "invalid_request_error", "stream"),
    ("seed float", {"messages": PROMPT, "seed": 1.5}, 400, "invalid_request_error", "seed"),
    ("unknown field", {"messages": PROMPT, "frobnicate": 1}, 400, "invalid_request_error", "frobnicate"),
    ("tools unsupported", {"messages": PROMPT, "tools": [{"type": "function"}]}, 400, "invalid_request_error",
     "tools"),
    ("unknown model", {"model": "gpt-17", "messages": PROMPT}, 404, "not_found_error", "model"),
    ("body over 1 MiB", {"messages": [{"role": "user", "content": "x" * (1024 * 1024 + 10)}]}, 413,
     "invalid_request_error", None),
]


@pytest.mark.parametrize("name,body,status,etype,param", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_4xx_with_error_envelope(server, name, body, status, etype, param):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == etype
    assert err["param"] == param
    assert err["message"]


def test_unknown_endpoint_and_method_use_the_envelope(server):
    r = httpx.get(server.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_server_still_healthy_after_bad_requests(client, server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert greedy(client, max_tokens=2).choices[0].finish_reason in ("stop", "length")
    status = json.loads((server.base_dir / "status" / "inference_server.json").read_text())
    assert status["model"]["version"] == "v-api" and status["pid"] == server.proc.pid
