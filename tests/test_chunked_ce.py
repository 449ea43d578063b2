"""The LM head and loss in blocks (large vocabularies) give the full-logits loss and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.data.batching import PadCollator
from trainer.engine.chunked_ce import head_as_identity, linear_cross_entropy_sum, use_chunked_head
from trainer.engine.last_layer import LastLayerPruner
from trainer.engine.loss import chunk_rows_for, label_only_loss

from tests.helpers.grads import assert_same, llama, loss_and_grads, multi_turn_batch


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_blockwise_head_and_loss_equal_the_full_logits(chunk_rows):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(50, 16, generator=g, requires_grad=True)
    weight = torch.randn(300, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 300, (50,), generator=g)
    targets[[3, 17, 40]] = -100
    ref = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum", ignore_index=-100)
    ref_h, ref_w = torch.autograd.grad(ref * 0.5, (hidden, weight))
    ours = linear_cross_entropy_sum(hidden, weight, targets, chunk_rows)
    our_h, our_w = torch.autograd.grad(ours * 0.5, (hidden, weight))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(our_h, ref_h, atol=1e-5) and torch.allclose(our_w, ref_w, atol=1e-5)
    with torch.no_grad():  # evaluation: no gradients are computed or kept
        assert linear_cross_entropy_sum(hidden, weight, targets, chunk_rows).item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError, match="chunk_rows"):
        linear_cross_entropy_sum(hidden, weight, targets, 0)


def test_the_engine_loss_in_blocks_equals_the_models_own(tiny_model_dir):
    """Through the model (tied embeddings: the head's gradient adds to the input embedding's), with
    the pruned last layer on, and with the budget forcing several blocks."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert use_chunked_head(model) and model.config.tie_word_embeddings
    batch = PadCollator(0)(multi_turn_batch(model.config.vocab_size, seed=13))
    n_labels = int((batch["labels"][:, 1:] != -100).sum())
    budget = 4 * model.config.vocab_size * 10  # 10 rows per block
    assert chunk_rows_for(model, n_labels, budget) == 10 and chunk_rows_for(model, n_labels, 0) is None
    assert chunk_rows_for(model, n_labels, 10**12) is None  # fits: one ordinary logits tensor
    ref = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    pruner = LastLayerPruner.attach(model)
    ours = loss_and_grads(model, lambda: label_only_loss(model, batch, None, pruner, budget))
    assert pruner.enabled and pruner.pruned_calls >= 2
    assert_same(ref, ours)
    assert "forward" not in model.lm_head.__dict__  # the head is the model's own again
    assert model(**batch, use_cache=False).logits.shape[-1] == model.config.vocab_size


def test_heads_that_are_not_plain_linear_layers_keep_the_full_logits():
    from transformers import GPT2Config, GPT2LMHeadModel
    from peft import LoraConfig, get_peft_model
    assert not use_chunked_head(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)))
    lora_head = get_peft_model(llama(), LoraConfig(r=2, target_modules=["lm_head"])).get_base_model()
    assert not use_chunked_head(lora_head)
    plain = llama()
    with head_as_identity(plain):
        x = torch.randn(2, 64)
        assert plain.lm_head(x) is x
    assert plain.lm_head(x).shape == (2, plain.config.vocab_size)
