"""The engine's loss with the last decoder layer at label positions only (and right-padded batches
without their attention mask) gives the model's own loss and gradients."""
from __future__ import annotations

import logging

import pytest
import torch

from trainer.data.batching import PackCollator, PadCollator
from trainer.engine.last_layer import LastLayerPruner, gather_label_positions
from trainer.engine.loss import label_only_loss, right_padding_only

from tests.helpers.grads import assert_same, llama, loss_and_grads, multi_turn_batch


def test_gather_label_positions_pads_with_a_position_that_is_never_kept():
    keep = torch.tensor([[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    idx, valid = gather_label_positions(keep)
    assert idx.tolist() == [[1, 3, 4], [4, 5, 5], [5, 5, 5]]
    assert valid.tolist() == [[True, True, True], [True, False, False], [False, False, False]]


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_pruned_last_layer_gives_the_models_own_loss_and_gradients(tiny_model_dir, family):
    from transformers import AutoModelForCausalLM
    if family == "qwen3":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    else:
        model = llama()
    feats = multi_turn_batch(model.config.vocab_size, seed=3)
    batch = PadCollator(0)(feats)
    assert right_padding_only(batch["attention_mask"], batch["labels"])
    n_items = (batch["labels"][:, 1:] != -100).sum()
    ref = loss_and_grads(model, lambda: model(**batch, num_items_in_batch=n_items, use_cache=False).loss)
    pruner = LastLayerPruner.attach(model)
    assert pruner is not None
    ours = loss_and_grads(model, lambda: label_only_loss(model, batch, n_items, pruner))
    assert pruner.verified and pruner.enabled and pruner.pruned_calls >= 2  # the check, then the step
    assert_same(ref, ours)
    # Packed rows (position_ids) take the model's own last layer: the pruned one would let examples meet.
    calls = pruner.pruned_calls
    packed = loss_and_grads(model, lambda: label_only_loss(model, PackCollator()(feats), n_items, pruner))
    assert pruner.pruned_calls == calls
    assert_same(ref, packed)


def test_left_padded_batches_keep_their_mask_and_the_stock_last_layer(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    feats = multi_turn_batch(model.config.vocab_size, seed=5, lengths=(20, 33, 27))
    right = PadCollator(0)(feats)
    width = right["input_ids"].shape[1]
    left = {k: torch.stack([torch.roll(row, width - int(m.sum())) for row, m in zip(v, right["attention_mask"])])
            for k, v in right.items()}
    assert not right_padding_only(left["attention_mask"], left["labels"])
    pruner = LastLayerPruner.attach(model)
    ref = loss_and_grads(model, lambda: model(**left, use_cache=False).loss)
    ours = loss_and_grads(model, lambda: label_only_loss(model, left, None, pruner))
    assert pruner.pruned_calls == 0
    assert_same(ref, ours)


def test_a_model_whose_layer_differs_is_caught_by_the_first_batch_check(tiny_model_dir, caplog):
    """A Llama-shaped model whose attention differs from what the pruned layer assumes (here its
    rotary embedding) fails the first-batch comparison: pruning switches off and the loss is right."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    pruner = LastLayerPruner.attach(model)
    pruner.rope = lambda q, k, cos, sin: (q, k)  # not the model's rotary embedding
    batch = PadCollator(0)(multi_turn_batch(model.config.vocab_size, seed=7))
    ref = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    with caplog.at_level(logging.WARNING, logger="trainer.engine.last_layer"):
        ours = loss_and_grads(model, lambda: label_only_loss(model, batch, None, pruner))
    assert not pruner.enabled and "pruning off" in caplog.text
    assert_same(ref, ours)
    calls = pruner.pruned_calls
    label_only_loss(model, batch, None, pruner)
    assert pruner.pruned_calls == calls  # off for good


def test_models_that_are_not_llama_shaped_are_left_alone():
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    assert LastLayerPruner.attach(gpt2) is None
    eager = llama()
    eager.config._attn_implementation = "flash_attention_2"
    assert LastLayerPruner.attach(eager) is None


def test_lora_adapters_get_the_same_gradients_through_the_pruned_layer(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                                            init_lora_weights=False))  # non-zero B: every adapter gets a gradient
    batch = PadCollator(0)(multi_turn_batch(base.config.vocab_size, seed=9))
    ref = loss_and_grads(model, lambda: model(**batch, use_cache=False).loss)
    pruner = LastLayerPruner.attach(model)
    ours = loss_and_grads(model, lambda: label_only_loss(model, batch, None, pruner))
    assert pruner.enabled and pruner.pruned_calls >= 2
    assert ref[1] and all("lora_" in k for k in ref[1])
    assert_same(ref, ours)


def test_columns_after_the_last_label_are_not_computed():
    from trainer.engine.loss import _without_trailing_columns
    keep = torch.zeros(2, 6, dtype=torch.bool)
    keep[0, 1], keep[1, 3] = True, True
    fwd = {"input_ids": torch.arange(12).view(2, 6), "attention_mask": torch.ones(2, 6), "other": 7}
    crop, k = _without_trailing_columns(fwd, keep)
    assert crop["input_ids"].tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]] and crop["attention_mask"].shape == (2, 4)
    assert crop["other"] == 7 and k.shape == (2, 4) and int(k.sum()) == 2
    keep[1, 5] = True  # a label at the last column: nothing to drop
    assert _without_trailing_columns(fwd, keep)[0] is fwd


def test_pruning_stays_on_under_bf16_autocast(tiny_model_dir):
    """Mixed precision (bf16 autocast over fp32 weights, the CPU training mode on bf16 hardware):
    the pruned layer runs under autocast (its attention gets matching dtypes) and the loss agrees
    with the model's own within bf16 rounding."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    pruner = LastLayerPruner.attach(model)
    batch = PadCollator(0)(multi_turn_batch(model.config.vocab_size, seed=17))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(**batch, use_cache=False).loss.item()
        ours = label_only_loss(model, batch, None, pruner).item()
    assert pruner.verified and pruner.enabled and pruner.pruned_calls >= 2
    assert ours == pytest.approx(ref, rel=2e-2)
