"""Serving's CPU fast paths: linear weights prepacked for oneDNN (``packed_linear``) and the
Llama-family prefill and decode forward (``fast_forward``). Both must give the model's own answers, fall back
where they do not apply, and undo themselves when their self-check fails."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _load(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _prompts(tok, n=6):
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Say #{i}: " + " ".join(words[(i + j) % 8] for j in range(2 + 5 * i))}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(tok(text, add_special_tokens=False)["input_ids"])
    return out


def _generate(model, tok, prompts, max_batch_size=4):
    from trainer.generation.batch_generate import generate_batch
    from trainer.generation.target import decode_target
    return generate_batch(decode_target(model, tok), prompts, max_new_tokens=20, max_batch_size=max_batch_size)


def _linears(model):
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


def test_packed_linears_give_the_models_logits_and_train_unchanged(tiny_model_dir):
    from trainer.generation.packed_linear import PACKED_ATTR, pack_linears, unpack_linears

    model, tok = _load(tiny_model_dir)
    ids = torch.tensor(_prompts(tok, 1))
    with torch.inference_mode():
        want = model(input_ids=ids).logits
    plain_grads = _grads(model, ids)

    n = pack_linears(model)
    assert n == len(_linears(model)) == 4 * 7 + 1  # q,k,v,o + gate,up,down per layer, and the head
    assert all(PACKED_ATTR in m.__dict__ for m in _linears(model))
    from torch.profiler import profile
    with torch.inference_mode(), profile() as prof:
        got = model(input_ids=ids).logits
    ran = sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise")
    assert ran == n  # oneDNN's kernel ran for every layer...
    assert (got - want).abs().max() < 1e-4  # ...with the model's numbers
    # with gradients on, the modules use their own weights: training through them is unchanged
    packed_grads = _grads(model, ids)
    for name, g in plain_grads.items():
        assert torch.allclose(packed_grads[name], g, atol=1e-6), name
    assert pack_linears(model) == 0  # already packed: nothing more

    unpack_linears(model)
    assert not any(PACKED_ATTR in m.__dict__ or "forward" in m.__dict__ for m in _linears(model))
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, want)


def _grads(model, ids):
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


def test_nothing_is_packed_without_the_memory_for_it(tiny_model_dir):
    from trainer.generation.packed_linear import PACKED_ATTR, pack_linears

    model, _ = _load(tiny_model_dir)
    need = sum(m.weight.numel() * m.weight.element_size() for m in _linears(model))
    assert pack_linears(model, available_bytes=need * 3) == 0  # the copies would take a third: over a quarter
    assert not any(PACKED_ATTR in m.__dict__ for m in model.modules())
    assert pack_linears(model, available_bytes=need * 5) == len(_linears(model))


def test_a_layer_failing_its_check_leaves_the_whole_model_unpacked(tiny_model_dir, monkeypatch):
    from trainer.generation import packed_linear

    model, _ = _load(tiny_model_dir)
    seen = []
    real = packed_linear._agrees

    def third_fails(torch_, m, packed):
        seen.append(m)
        return real(torch_, m, packed) and len(seen) != 3

    monkeypatch.setattr(packed_linear, "_agrees", third_fails)
    assert packed_linear.pack_linears(model) == 0
    assert len(seen) == 3  # two layers were packed before the third failed...
    assert not any(packed_linear.PACKED_ATTR in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


def test_fast_forward_answers_as_the_model_does(tiny_model_dir):
    from trainer.generation import fast_forward
    from trainer.generation.packed_linear import pack_linears

    model, tok = _load(tiny_model_dir)
    prompts = _prompts(tok)
    fast_forward.disable(model)
    want = _generate(model, tok, prompts)
    model.__dict__.pop(fast_forward.ATTR)
    assert fast_forward.fast_forward_for(model) is not None
    got = _generate(model, tok, prompts)
    pack_linears(model)  # as the server runs it
    packed = _generate(model, tok, prompts)
    for w, g, p in zip(want, got, packed):
        assert g["tokens"] == w["tokens"] == p["tokens"]
        assert g["probs"] == pytest.approx(w["probs"], abs=1e-5)
        assert p["probs"] == pytest.approx(w["probs"], abs=1e-5)
    assert sum(len(w["tokens"]) for w in want) >= 60  # rows really decoded, through joins (batch 4 < 6)


def test_fast_forward_on_a_llama_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.generation import fast_forward

    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64})
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    step = fast_forward.fast_forward_for(model)  # checks itself against the model's forward
    assert step is not None and step.heads == 4 and step.kv_heads == 2


def test_other_models_keep_their_own_forward(tiny_model_dir, caplog):
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from trainer.generation import fast_forward

    _, tok = _load(tiny_model_dir)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=256)).eval()
    assert fast_forward.fast_forward_for(gpt2) is None
    out = _generate(gpt2, tok, _prompts(tok, 3))
    assert all(len(r["tokens"]) > 0 and r["error"] is None for r in out)

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.layer_types = ["sliding_attention", "full_attention"] * (cfg.num_hidden_layers // 2)
    cfg.sliding_window, cfg.use_sliding_window = 16, True
    sliding = AutoModelForCausalLM.from_config(cfg).eval()
    assert fast_forward.fast_forward_for(sliding) is None

    model, _ = _load(tiny_model_dir)
    with caplog.at_level("WARNING", logger="trainer.generation"):
        assert fast_forward.fast_forward_for(model, check=lambda step, m: False) is None
    assert "disagrees" in caplog.text
    assert fast_forward.fast_forward_for(model) is None  # the verdict is kept: no re-check every step


def test_fast_prefill_gives_the_models_last_logits_and_cache(tiny_model_dir):
    from trainer.generation import fast_forward
    from trainer.generation.kv_batch import new_cache
    from trainer.generation.target import cache_kwarg_name

    model, tok = _load(tiny_model_dir)
    prompts = _prompts(tok, 4)
    L = max(map(len, prompts))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    assert len(set(map(len, prompts))) == 4  # every row but the longest is left-padded
    step = fast_forward.fast_forward_for(model)
    with torch.inference_mode():
        ref_cache, cache = new_cache(model), new_cache(model)
        want = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1,
                     **{cache_kwarg_name(model): ref_cache}).logits[:, -1]
        got = step.step(ids, attn, pos, cache)
    assert got.shape == want.shape and (got - want).abs().max() < 1e-4
    for a, b in zip(ref_cache.layers, cache.layers):  # the cache the decode steps continue from
        keep = attn.bool()[:, None, :, None]  # (padding columns are masked later, whatever they hold)
        assert torch.allclose(a.keys * keep, b.keys * keep, atol=1e-5)
        assert torch.allclose(a.values * keep, b.values * keep, atol=1e-5)
