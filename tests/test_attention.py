"""Attention in fp32 under CPU bf16 autocast (``trainer.engine.attention``): the kernel gets fp32
inputs there (the model's own attention and the pruned last layer's), nothing changes elsewhere, and
transformers' attention function is restored afterwards."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from trainer.data.batching import PadCollator
from trainer.engine.attention import fp32_cpu_attention
from trainer.engine.last_layer import LastLayerPruner
from trainer.engine.loss import label_only_loss

from tests.helpers.grads import llama, loss_and_grads, multi_turn_batch


@pytest.fixture
def kernel_dtypes(monkeypatch):
    """The dtype every ``scaled_dot_product_attention`` call computes in, in order (autocast casts
    its inputs to bf16 inside the call)."""
    seen: list[torch.dtype] = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, *a, **kw):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype)
        return real(q, k, v, *a, **kw)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    return seen


def _batch(model):
    return PadCollator(0)(multi_turn_batch(model.config.vocab_size, seed=5))


def test_attention_runs_in_fp32_under_cpu_bf16_autocast(kernel_dtypes):
    model = llama()
    batch = _batch(model)
    stock = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(**batch, use_cache=False).loss.backward()
    assert kernel_dtypes and set(kernel_dtypes) == {torch.bfloat16}  # what autocast does by itself
    kernel_dtypes.clear()
    with fp32_cpu_attention(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, use_cache=False).loss
    loss.backward()
    assert len(kernel_dtypes) == model.config.num_hidden_layers and set(kernel_dtypes) == {torch.float32}
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock
    kernel_dtypes.clear()
    with fp32_cpu_attention(enabled=False), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**batch, use_cache=False)
    assert set(kernel_dtypes) == {torch.bfloat16}


def test_the_pruned_last_layer_attends_in_fp32_too(kernel_dtypes):
    model = llama()
    batch = _batch(model)
    pruner = LastLayerPruner.attach(model)
    with fp32_cpu_attention(), torch.autocast("cpu", dtype=torch.bfloat16):
        label_only_loss(model, batch, None, pruner).backward()
    assert pruner.enabled and pruner.pruned_calls >= 2
    assert kernel_dtypes and set(kernel_dtypes) == {torch.float32}


def test_fp32_training_is_unchanged_bit_for_bit():
    model = llama()
    batch = _batch(model)
    ref_loss, ref_grads = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    with fp32_cpu_attention():
        loss, grads = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    assert loss == ref_loss
    assert all(torch.equal(ref_grads[k], grads[k]) for k in ref_grads)


def test_the_stock_function_comes_back_after_an_error():
    stock = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with pytest.raises(RuntimeError):
        with fp32_cpu_attention():
            assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not stock
            raise RuntimeError("boom")
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock


def test_a_bf16_cpu_job_attends_in_fp32(base_dir, kernel_dtypes):
    from tests.conftest import chat_records, write_jsonl
    from trainer.config.loader import config_to_dict, load_config
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    data = write_jsonl(base_dir / "train.jsonl", chat_records(16, seed=4))
    cfg = config_to_dict(load_config(base_dir=base_dir, environ={}, overrides={
        "training.max_steps": 2, "training.save_steps": 2, "training.precision": "bf16", "training.device": "cpu"}))
    res = TrainerEngine().run_job(TrainJob(dataset=str(data), output_dir=str(base_dir / "models/checkpoints/a"),
                                           model_path=cfg["model"]["model_path"], config=cfg, source_file=data.name,
                                           eval_dir=str(base_dir / "none")))
    assert res.ok and res.steps == 2 and res.metrics["precision"] == "bf16"
    assert kernel_dtypes and set(kernel_dtypes) == {torch.float32}
