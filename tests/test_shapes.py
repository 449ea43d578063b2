"""Shape buckets (``trainer.engine.shapes``): the step's shapes land on a few buckets (input width,
logit rows, pruned-layer queries) and the loss and gradients stay the same."""
from __future__ import annotations

import pytest
import torch

from trainer.data.batching import PadCollator
from trainer.engine.last_layer import LastLayerPruner
from trainer.engine.loss import label_only_loss
from trainer.engine.shapes import (LENGTH_MULTIPLE, QUERY_MULTIPLE, ROWS_MULTIPLE, fill_rows, round_up,
                                   wanted)

from tests.helpers.grads import assert_same, llama, loss_and_grads, multi_turn_batch


def test_round_up():
    assert [round_up(n, 16) for n in (1, 16, 17, 31, 32)] == [16, 16, 32, 32, 32]
    assert round_up(37, None) == 37 and round_up(37, 0) == 37


def test_fill_rows_adds_fillers_round_robin_up_to_the_multiple():
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(5, 90, generator=g) > 0.6
    keep[:, -1] = False
    n = int(keep.sum())
    out = fill_rows(keep, 64)
    assert int(out.sum()) == round_up(n, 64) > n
    assert bool(out[keep].all())  # every label position is still kept
    added = (out & ~keep).sum(1)
    need = round_up(n, 64) - n
    assert int(added.max()) <= -(-need // 5)  # spread over the rows
    for row in range(5):  # each row's fillers are its earliest free positions
        free = (~keep[row]).nonzero().flatten()
        assert torch.equal((out[row] & ~keep[row]).nonzero().flatten(), free[:int(added[row])])


def test_fill_rows_leaves_a_full_batch_alone():
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[:, -1] = False
    assert torch.equal(fill_rows(keep, 64), keep)  # 18 kept, only 2 free: cannot reach 64
    exact = torch.zeros(2, 64, dtype=torch.bool)
    exact[0, :32] = exact[1, :32] = True
    assert torch.equal(fill_rows(exact, 64), exact)


def test_wanted_only_for_bf16_on_a_cpu_unless_asked():
    assert wanted("auto", "cpu", True) and not wanted("auto", "cpu", False)
    assert not wanted("auto", "cuda:0", True) and not wanted("auto", "cuda", True)
    assert wanted("on", "cuda", False) and not wanted("off", "cpu", True)


def _shapes_seen(model):
    """Input widths and LM-head row counts of every forward, recorded by hooks."""
    seen = {"width": [], "rows": [], "queries": []}
    model.model.register_forward_pre_hook(
        lambda m, a, kw: seen["width"].append(kw["input_ids"].shape[1]), with_kwargs=True)
    model.lm_head.register_forward_pre_hook(lambda m, a: seen["rows"].append(a[0].shape[-2]))
    return seen


@pytest.mark.parametrize("prune", [False, True])
def test_buckets_give_the_same_loss_and_gradients_on_bucketed_shapes(prune):
    model = llama()
    feats = multi_turn_batch(model.config.vocab_size, seed=3, lengths=(37, 61, 12, 58, 49))
    plain = PadCollator(0)(feats)
    bucketed = PadCollator(0, pad_to_multiple_of=LENGTH_MULTIPLE)(feats)
    assert bucketed["input_ids"].shape[1] == 64 and plain["input_ids"].shape[1] == 61
    pruner = LastLayerPruner.attach(model) if prune else None
    ref = loss_and_grads(model, lambda: label_only_loss(model, plain, None, pruner))
    seen = _shapes_seen(model)
    ours = loss_and_grads(model, lambda: label_only_loss(model, bucketed, None, pruner, buckets=True))
    assert_same(ref, ours)
    assert seen["width"] and all(w % LENGTH_MULTIPLE == 0 for w in seen["width"])
    assert seen["rows"] and all(r % ROWS_MULTIPLE == 0 for r in seen["rows"])
    if prune:
        assert pruner.enabled and pruner.pruned_calls >= 1
        assert pruner._idx is None  # only set inside the step
    # num_items_in_batch (the Trainer's token count) gives the same loss too
    n_items = int((plain["labels"][:, 1:] != -100).sum())
    ref = loss_and_grads(model, lambda: label_only_loss(model, plain, n_items, pruner))
    ours = loss_and_grads(model, lambda: label_only_loss(model, bucketed, n_items, pruner, buckets=True))
    assert_same(ref, ours)


def test_the_pruned_layer_rounds_its_queries_per_row(monkeypatch):
    from trainer.engine import last_layer
    model = llama()
    # rows with 18 label positions at most (21 with fillers): neither a multiple of QUERY_MULTIPLE
    feats = multi_turn_batch(model.config.vocab_size, seed=4, lengths=(30, 50, 20, 45))
    batch = PadCollator(0, pad_to_multiple_of=LENGTH_MULTIPLE)(feats)
    pruner = LastLayerPruner.attach(model)
    widths = []
    real = last_layer.gather_label_positions

    def recording(keep, multiple=None):
        idx, valid = real(keep, multiple)
        widths.append(idx.shape[1])
        return idx, valid
    monkeypatch.setattr(last_layer, "gather_label_positions", recording)
    label_only_loss(model, batch, None, pruner, buckets=True)  # the first batch also runs the check
    assert pruner.verified and pruner.enabled
    widths.clear()
    label_only_loss(model, batch, None, pruner)  # without buckets: this batch's own query count
    label_only_loss(model, batch, None, pruner, buckets=True)
    assert len(widths) == 2 and widths[0] % QUERY_MULTIPLE and widths[1] % QUERY_MULTIPLE == 0
