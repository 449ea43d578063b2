"""Attention under CPU bf16 autocast (``trainer.engine.attention``): each mode runs the kernel it
names (the model's own attention and the pruned last layer's), ``math_bf16`` computes attention
correctly (grouped-query, causal, boolean and additive masks), nothing changes in fp32, and
transformers' attention function is restored afterwards."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from trainer.data.batching import PadCollator
from trainer.engine import attention
from trainer.engine.attention import cpu_bf16_attention, math_bf16_attention
from trainer.engine.last_layer import LastLayerPruner
from trainer.engine.loss import label_only_loss

from tests.helpers.grads import llama, loss_and_grads, multi_turn_batch


@pytest.fixture
def kernels(monkeypatch):
    """Each attention kernel call in order: ("flash", dtype it computes in) or ("math", bf16)."""
    seen: list[tuple[str, torch.dtype]] = []
    real_flash, real_math = F.scaled_dot_product_attention, attention.math_bf16_attention

    def flash(q, k, v, *a, **kw):
        seen.append(("flash", torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype))
        return real_flash(q, k, v, *a, **kw)

    def math(*a, **kw):
        seen.append(("math", torch.bfloat16))
        return real_math(*a, **kw)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", flash)
    monkeypatch.setattr(attention, "math_bf16_attention", math)
    return seen


def _batch(model):
    return PadCollator(0)(multi_turn_batch(model.config.vocab_size, seed=5))


@pytest.mark.parametrize("mode, kernel", [("auto", ("math", torch.bfloat16)),
                                          ("math_bf16", ("math", torch.bfloat16)),
                                          ("flash_fp32", ("flash", torch.float32)),
                                          ("flash_bf16", ("flash", torch.bfloat16))])
def test_each_mode_runs_its_kernel_under_cpu_bf16_autocast(kernels, mode, kernel):
    model = llama()
    batch = _batch(model)
    stock = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with cpu_bf16_attention(mode), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, use_cache=False).loss
    loss.backward()
    assert kernels == [kernel] * model.config.num_hidden_layers
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock
    kernels.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # outside the context: what autocast does
        model(**batch, use_cache=False)
    assert set(kernels) == {("flash", torch.bfloat16)}


def test_auto_leaves_long_sequences_to_the_stock_kernel(kernels, monkeypatch):
    model = llama()
    batch = _batch(model)
    monkeypatch.setattr(attention, "MATH_MAX_SCORES_BYTES", 64)  # every call's scores are larger
    with cpu_bf16_attention("auto"), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**batch, use_cache=False)
    assert set(kernels) == {("flash", torch.bfloat16)}


def test_the_pruned_last_layer_follows_the_mode_too(kernels):
    model = llama()
    batch = _batch(model)
    pruner = LastLayerPruner.attach(model)
    with cpu_bf16_attention("auto"), torch.autocast("cpu", dtype=torch.bfloat16):
        label_only_loss(model, batch, None, pruner).backward()
    assert pruner.enabled and pruner.pruned_calls >= 2
    assert kernels and set(kernels) == {("math", torch.bfloat16)}


@pytest.mark.parametrize("heads, kv_heads, q_len, k_len, mask", [
    (4, 2, 37, 37, "causal"), (4, 4, 20, 20, "causal"), (6, 2, 9, 30, "bool"), (4, 2, 16, 16, "additive")])
def test_math_bf16_matches_fp64_attention_to_bf16_precision(heads, kv_heads, q_len, k_len, mask):
    g = torch.Generator().manual_seed(heads * 100 + q_len)
    q = torch.randn(3, heads, q_len, 32, generator=g, requires_grad=True)
    k = torch.randn(3, kv_heads, k_len, 32, generator=g, requires_grad=True)
    v = torch.randn(3, kv_heads, k_len, 32, generator=g, requires_grad=True)
    kw = {"is_causal": True} if mask == "causal" else {}
    if mask == "bool":
        kw["attn_mask"] = torch.rand(3, 1, q_len, k_len, generator=g) > 0.4
        kw["attn_mask"][..., 0] = True
    elif mask == "additive":
        kw["attn_mask"] = torch.randn(3, 1, q_len, k_len, generator=g)
    rep = heads // kv_heads
    ref_mask = {n: (t.double() if torch.is_tensor(t) and t.is_floating_point() else t) for n, t in kw.items()}
    ref = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(rep, 1),
                                         v.double().repeat_interleave(rep, 1), scale=0.2, **ref_mask)
    out = math_bf16_attention(q, k, v, scale=0.2, **kw)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    err = (out.double() - ref).abs()
    assert err.mean() < 4e-3 and err.max() < 6e-2  # bf16 rounding of scores, probabilities and output
    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (out.double() * upstream).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    (ref * upstream).sum().backward()
    for got, want in zip(grads, (q.grad, k.grad, v.grad)):
        assert (got - want).abs().mean() < 0.05 * want.abs().mean()


def test_fp32_training_is_unchanged_bit_for_bit():
    model = llama()
    batch = _batch(model)
    ref_loss, ref_grads = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    with cpu_bf16_attention("auto"):
        loss, grads = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    assert loss == ref_loss
    assert all(torch.equal(ref_grads[k], grads[k]) for k in ref_grads)


def test_a_bad_mode_is_refused_and_the_stock_function_comes_back_after_an_error():
    stock = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with pytest.raises(ValueError, match="flash_fp32"):
        with cpu_bf16_attention("fast"):
            pass
    with pytest.raises(RuntimeError):
        with cpu_bf16_attention("auto"):
            assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not stock
            raise RuntimeError("boom")
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock


def test_a_bf16_cpu_job_attends_by_the_configured_way(base_dir, kernels):
    from tests.conftest import chat_records, write_jsonl
    from trainer.config.loader import config_to_dict, load_config
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    data = write_jsonl(base_dir / "train.jsonl", chat_records(16, seed=4))
    for mode, kernel in (("auto", ("math", torch.bfloat16)), ("flash_fp32", ("flash", torch.float32))):
        kernels.clear()
        cfg = config_to_dict(load_config(base_dir=base_dir, environ={}, overrides={
            "training.max_steps": 2, "training.save_steps": 2, "training.precision": "bf16",
            "training.device": "cpu", "training.cpu_attention": mode}))
        res = TrainerEngine().run_job(TrainJob(dataset=str(data), output_dir=str(base_dir / f"models/checkpoints/{mode}"),
                                               model_path=cfg["model"]["model_path"], config=cfg,
                                               source_file=data.name, eval_dir=str(base_dir / "none")))
        assert res.ok and res.steps == 2 and res.metrics["precision"] == "bf16"
        assert kernels and set(kernels) == {kernel}
