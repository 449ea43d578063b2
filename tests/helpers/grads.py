"""Shared by the loss tests: batches with labels in several spans, loss-and-gradient capture and
comparison, a small random Llama."""
from __future__ import annotations

import pytest
import torch


def multi_turn_batch(vocab: int, seed: int, lengths=(37, 61, 12, 58, 49)):
    """Rows of different lengths with labels in several spans (a multi-turn chat's assistant turns)."""
    g = torch.Generator().manual_seed(seed)
    feats = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        labels = [-100] * n
        for start in range(3, n, 17):  # a labelled span of 6 every 17 tokens
            for i in range(start, min(start + 6, n)):
                labels[i] = ids[i]
        feats.append({"input_ids": ids, "labels": labels})
    return feats


def loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(ref, ours, atol=2e-5):
    (ref_loss, ref_g), (our_loss, our_g) = ref, ours
    assert our_loss == pytest.approx(ref_loss, abs=1e-5)
    assert ref_g.keys() == our_g.keys()
    worst = max((ref_g[k] - our_g[k]).abs().max().item() for k in ref_g)
    assert worst < atol, worst


def llama(vocab=300):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).float()
