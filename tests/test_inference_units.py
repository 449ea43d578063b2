"""In-process checks of the server's building blocks: the continuous batcher against plain
``model.generate``, stop-sequence streaming, and request parsing."""
from __future__ import annotations

import threading
import time

import pytest

from inference.errors import APIError
from inference.validation import parse_chat_request


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """fp32: the batcher's tokens are compared exactly with ``model.generate`` (in bf16 a row's
    rounding depends on what it is batched with, as in any bf16 server)."""
    from inference.model_loader import load_model
    return load_model(tiny_model_dir, version="unit", model_id="tiny-qwen3", device="cpu", precision="fp32")


def test_precision_reaches_the_served_weights(tiny_model_dir, engine, tmp_path):
    """``inference.precision`` (config, environment, ``--precision``) decides the served dtype; bf16
    keeps the CPU fast paths (packed bf16 linears, the fast forward's self-check passes) and serves."""
    import torch

    from inference.batcher import Batcher, GenRequest
    from inference.model_loader import load_model
    from inference.settings import ServerSettings
    from trainer.generation.fast_forward import fast_forward_for
    assert engine.dtype == "float32" and next(engine.model.parameters()).dtype == torch.float32
    assert ServerSettings.from_config(tmp_path, environ={"TRAINER__INFERENCE__PRECISION": "bf16"}).precision == "bf16"
    assert ServerSettings.from_config(tmp_path, environ={}, precision="fp32").precision == "fp32"
    b16 = load_model(tiny_model_dir, version="b", model_id="tiny-qwen3", device="cpu", precision="bf16")
    assert b16.dtype == "bfloat16" and {p.dtype for p in b16.model.parameters()} == {torch.bfloat16}
    assert b16.packed_linears == 4 * 7 + 1 and fast_forward_for(b16.model) is not None
    ids = prompt_ids(b16, "Repeat #1: alpha beta gamma")
    batcher = Batcher(max_batch_size=2, batch_wait_s=0.0).start()
    try:
        r = GenRequest(b16, ids, 8, Sink(), temperature=0.0)
        batcher.submit(r)
        assert r.sink.done.wait(120)
    finally:
        batcher.stop()
    assert r.sink.error is None and r.sink.usage["completion_tokens"] > 0


class Sink:
    def __init__(self):
        self.parts: list[str] = []
        self.done = threading.Event()
        self.reason = None
        self.usage = None
        self.error = None

    def delta(self, text):
        self.parts.append(text)

    def finish(self, reason, usage):
        self.reason, self.usage = reason, usage
        self.done.set()

    def fail(self, error):
        self.error = error
        self.done.set()


def prompt_ids(engine, text):
    tok = engine.tokenizer
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return tok(rendered, add_special_tokens=False)["input_ids"]


def reference(engine, ids, n):
    import torch
    with torch.inference_mode():
        out = engine.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=n, do_sample=False, eos_token_id=sorted(engine.eos_ids),
                                    pad_token_id=engine.pad_id)
    gen = out[0, len(ids):].tolist()
    for i, t in enumerate(gen):
        if t in engine.eos_ids:
            return gen[:i]
    return gen


def test_continuous_batching_matches_generate_with_staggered_arrivals(engine):
    """Rows join a running batch (padded cache merge) and leave it (compaction) at different steps;
    every row's greedy tokens must equal plain single-sequence generate."""
    from inference.batcher import Batcher, GenRequest

    texts = ["hi", "Repeat #1: alpha beta gamma delta epsilon zeta", "cats are animals",
             "def foo(x):", "Some bloops are razzies. All razzies are wugs.", "one two three four five six"]
    lengths = [12, 5, 16, 3, 9, 14]
    batcher = Batcher(max_batch_size=4, max_queue=16, batch_wait_s=0.0).start()
    try:
        reqs = []
        for i, (text, n) in enumerate(zip(texts, lengths)):
            r = GenRequest(engine, prompt_ids(engine, text), n, Sink(), temperature=0.0)
            batcher.submit(r)
            reqs.append(r)
            if i % 2 == 1:
                time.sleep(0.03)  # later requests arrive while earlier ones are decoding
        for r in reqs:
            assert r.sink.done.wait(120)
    finally:
        batcher.stop()
    assert batcher.steps > 0 and batcher.merges > 0
    for r, n in zip(reqs, lengths):
        assert r.sink.error is None
        ref = reference(engine, r.prompt_ids, n)
        assert r.generated == ref, (r.generated, ref)
        ended_by_eos = len(ref) < n
        assert (r.eos_token is not None) == ended_by_eos
        assert r.sink.usage["completion_tokens"] == len(ref) + ended_by_eos  # the EOS token counts
        assert "".join(r.sink.parts) == engine.tokenizer.decode(ref, skip_special_tokens=True)


def test_cancelled_request_leaves_the_batch(engine):
    from inference.batcher import Batcher, GenRequest
    batcher = Batcher(max_batch_size=4, batch_wait_s=0.0).start()
    try:
        keep = GenRequest(engine, prompt_ids(engine, "hello"), 40, Sink(), temperature=0.0)
        drop = GenRequest(engine, prompt_ids(engine, "hello there"), 2000, Sink(), temperature=0.0)
        batcher.submit(keep)
        batcher.submit(drop)
        time.sleep(0.05)
        drop.cancel()
        assert keep.sink.done.wait(120) and keep.sink.reason == "length"
        deadline = time.monotonic() + 30
        while batcher.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.active == 0 and len(drop.generated) < 2000
    finally:
        batcher.stop()


def test_queue_bound_raises_429(engine):
    from inference.batcher import Batcher, GenRequest
    batcher = Batcher(max_batch_size=1, max_queue=2)  # not started: nothing leaves the queue
    for _ in range(2):
        batcher.submit(GenRequest(engine, [1, 2], 1, Sink()))
    with pytest.raises(APIError) as e:
        batcher.submit(GenRequest(engine, [1, 2], 1, Sink()))
    assert e.value.status == 429 and e.value.type == "rate_limit_error"


def test_text_stream_holds_back_a_possible_stop_and_never_splits_characters(tiny_model_dir):
    from transformers import AutoTokenizer
    from trainer.generation.text_stream import TextStream

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "think 🤔🤔 then STOP here"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ts = TextStream(tok, ["STOP", "never-seen"])
    pieces = [ts.push(i) for i in ids]
    pieces.append(ts.flush())
    out = "".join(pieces)
    assert out == "think 🤔🤔 then "
    assert ts.stopped
    assert all("\ufffd" not in p for p in pieces)
    # a partial match is held back while it could still become the stop sequence
    ts2 = TextStream(tok, ["STOP"])
    emitted = "".join(ts2.push(i) for i in tok("abc ST", add_special_tokens=False)["input_ids"])
    assert not emitted.endswith("ST") and ts2.flush().endswith("ST")


def test_parse_chat_request_accepts_openai_shapes():
    req = parse_chat_request({
        "model": "tiny-qwen3",
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 5, "stop": "x", "seed": 3, "stream": True,
        "stream_options": {"include_usage": True}, "user": "someone", "logit_bias": {"17": -100},
    })
    assert req.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert req.max_tokens == 5 and req.stop == ["x"] and req.seed == 3 and req.include_usage
    assert req.logit_bias == {17: -100.0}


def test_profile_shapes_prompt_stops_and_processors(tiny_model_dir):
    """regime3: its system prompt (with today's date) is rendered into the prompt, its stop sequence
    joins the request's, and its logits processors run inside the batcher."""
    from datetime import datetime

    from inference import profile_adapter
    from inference.batcher import Batcher, GenRequest
    from inference.model_loader import load_model
    from inference.validation import bind_to_model

    eng = load_model(tiny_model_dir, version="p", model_id="tiny-qwen3", device="cpu", profile_name="regime3")
    assert eng.profile_name == "regime3" and "<<ANS_END>>" in eng.stop_sequences
    req = bind_to_model(parse_chat_request({"messages": [{"role": "user", "content": "(add 1 2)?"}],
                                            "stop": ["zzz"], "max_tokens": 6}), eng, 8)
    prompt = eng.tokenizer.decode(req.prompt_ids)
    assert "<<ANS_START>> (op a b) <<ANS_END>>" in prompt and datetime.now().strftime("%Y-%m-%d") in prompt
    assert req.stop_all == ["zzz", "<<ANS_END>>"]
    procs = profile_adapter.logits_processors(eng.profile, eng.tokenizer)
    assert procs, "regime3 builds logits processors"
    batcher = Batcher(max_batch_size=2, batch_wait_s=0.0).start()
    try:
        r = GenRequest(eng, req.prompt_ids, req.max_tokens, Sink(), temperature=0.0, stop=req.stop_all,
                       processors=procs)
        batcher.submit(r)
        assert r.sink.done.wait(120)
    finally:
        batcher.stop()
    assert r.sink.error is None and r.sink.reason in ("stop", "length")


def test_prefill_groups_split_very_different_lengths_only():
    from inference.batcher import prefill_groups
    assert prefill_groups([20] * 16) == [list(range(16))]
    groups = prefill_groups([10, 300, 12, 310, 11])
    assert sorted(sorted(g) for g in groups) == [[0, 2, 4], [1, 3]]
    assert prefill_groups([]) == []


def test_server_falls_back_to_the_base_model_when_current_is_broken(tmp_path, tiny_model_dir):
    from inference.server import ServerSettings, ServerState
    from tests.helpers.inference_server import deploy_version, make_base_dir, make_checkpoint

    base = make_base_dir(tmp_path / "base", tiny_model_dir)
    broken = make_checkpoint(tiny_model_dir, base, "job-x", 5, corrupt=True)
    deploy_version(broken, base, "v-broken", make_current=True)
    st = ServerState(ServerSettings.from_config(base, environ={}, write_status_file=False))
    st._initial_load()
    assert st.engine is not None and st.engine.version == "base" and st.state == "serving"
    assert "v-broken" in st.last_error
    # and without a base model to fall back to, it reports no model (503) with the reason
    st2 = ServerState(ServerSettings.from_config(base, environ={}, write_status_file=False,
                                                 serve_base_model_when_empty=False))
    st2._initial_load()
    assert st2.engine is None and st2.state == "no_model" and "v-broken" in st2.last_error
