"""Length-grouped batches: deterministic, complete, little padding, no curriculum, and usable
as a DataLoader / accelerate batch sampler."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader

from trainer.data.batching import LengthGroupedBatchSampler, PadCollator, pad_share, random_batches


def _uniform_lengths(n=4000, lo=8, hi=512, seed=0):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def _lens(batches, lengths):
    return [[lengths[i] for i in b] for b in batches]


def test_deterministic_and_complete():
    lengths = _uniform_lengths(1003)
    s = LengthGroupedBatchSampler(lengths, 8, seed=3)
    a = list(s)
    assert a == list(LengthGroupedBatchSampler(lengths, 8, seed=3))
    assert a != list(LengthGroupedBatchSampler(lengths, 8, seed=4))
    s.set_epoch(1)
    b = list(s)
    assert b != a and b == LengthGroupedBatchSampler(lengths, 8, seed=3).batches(epoch=1)
    for epoch_batches in (a, b):
        flat = [i for batch in epoch_batches for i in batch]
        assert sorted(flat) == list(range(1003))  # every index exactly once
        assert len(epoch_batches) == len(s) == 126
        assert all(len(x) == 8 for x in epoch_batches[:-1]) and len(epoch_batches[-1]) == 3  # short one last
    d = LengthGroupedBatchSampler(lengths, 8, seed=3, drop_last=True)
    batches = list(d)
    assert len(batches) == len(d) == 125 and all(len(x) == 8 for x in batches)
    assert len({i for x in batches for i in x}) == 1000


def test_pad_share_small_and_no_curriculum():
    lengths = _uniform_lengths()
    grouped = list(LengthGroupedBatchSampler(lengths, 8, seed=0))
    ours = pad_share(_lens(grouped, lengths))
    base = pad_share(_lens(random_batches(len(lengths), 8, seed=0), lengths))
    assert ours <= 0.05, ours
    assert base >= 0.25 and base / max(ours, 1e-9) > 8, (base, ours)
    # batch order is shuffled: the batch maxima are not sorted, nor correlated with position
    maxima = [max(b) for b in _lens(grouped, lengths)]
    n = len(maxima)
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    ranks = {v: k for k, v in enumerate(sorted(range(n), key=lambda k: maxima[k]))}
    pos_mean = (n - 1) / 2
    cov = sum((k - pos_mean) * (ranks[k] - pos_mean) for k in range(n))
    var = sum((k - pos_mean) ** 2 for k in range(n))
    assert abs(cov / var) < 0.2  # Spearman rank correlation between position and length
    # a small group size mixes more but pads more; group_size=1 is plain random batching
    assert pad_share(_lens(LengthGroupedBatchSampler(lengths, 8, group_size=1), lengths)) > 0.25


def test_longest_first_and_eval_order():
    lengths = _uniform_lengths(500)
    s = LengthGroupedBatchSampler(lengths, 4, longest_first=True)
    first = next(iter(s))
    assert max(lengths[i] for i in first) == max(lengths)
    e = list(LengthGroupedBatchSampler(lengths, 4, shuffle=False))
    flat = [lengths[i] for b in e for i in b]
    assert flat == sorted(lengths, reverse=True) and sum(map(len, e)) == 500


def test_collator_pads_right():
    c = PadCollator(pad_token_id=0, pad_to_multiple_of=4)
    out = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [9], "labels": [9]}])
    assert out["input_ids"].tolist() == [[5, 6, 7, 0], [9, 0, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100], [9, -100, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert all(t.dtype == torch.long for t in out.values())
    with pytest.raises(ValueError):
        PadCollator(pad_token_id=None)
    with pytest.raises(ValueError):
        c([{"input_ids": [1, 2], "labels": [1]}])
    assert pad_share([[3, 1]]) == pytest.approx(2 / 6)
    assert pad_share([[3, 1]], pad_to_multiple_of=4) == pytest.approx(4 / 8)


def test_dataloader_with_real_tokenized_dataset(tiny_model_dir):
    from transformers import AutoTokenizer
    from tests.conftest import chat_records
    from trainer.data.tokenization import build_dataset
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ds = build_dataset(tok, chat_records(50, min_words=1, max_words=30), max_length=512)
    assert not ds.skipped and len(set(ds.lengths)) > 10
    sampler = LengthGroupedBatchSampler(ds.lengths, 4, seed=1)
    dl = DataLoader(ds, batch_sampler=sampler, collate_fn=PadCollator(tok.pad_token_id))
    seen = 0
    for batch in dl:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        assert ids.shape == mask.shape == labels.shape
        assert mask.sum(1).max() == ids.shape[1]  # padded to the batch's longest row only
        assert (ids[mask == 0] == tok.pad_token_id).all() and (labels[mask == 0] == -100).all()
        assert ((labels != -100).sum(1) > 0).all()
        seen += ids.shape[0]
    assert seen == len(ds) == 50
    # accelerate reaches set_epoch through batch_sampler.sampler when it wraps the sampler
    sampler.sampler.set_epoch(5)
    assert sampler.epoch == 5 and [i for b in sampler.batches(5) for i in b] == list(sampler.sampler)


@pytest.mark.parametrize("n", [64, 50])
def test_accelerate_sharding_covers_every_index(n):
    from accelerate.data_loader import BatchSamplerShard
    lengths = _uniform_lengths(n, seed=2)
    s = LengthGroupedBatchSampler(lengths, 4, seed=0)
    shards = [list(BatchSamplerShard(s, num_processes=2, process_index=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # every process runs the same number of steps
    seen = [i for sh in shards for b in sh for i in b]
    assert set(seen) == set(range(n))
    # the only repeats are accelerate's even_batches padding of the final step
    assert len(seen) - n < 2 * 4
    assert [len(b) for b in shards[0]] == [4] * len(shards[0])


def test_pack_collator_rows_positions_and_boundary_labels():
    from trainer.data.batching import PackCollator, packing_supported
    out = PackCollator()([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                          {"input_ids": [8, 9], "labels": [8, 9]}])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # the first token of each example is never a target (the previous example must not predict it)
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert "attention_mask" not in out
    assert packing_supported("flash_attention_2") and packing_supported("flex_attention")
    assert not packing_supported("sdpa") and not packing_supported("eager") and not packing_supported(None)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_do_not_attend_to_each_other(tiny_model_dir, attn):
    """Transformers 5 turns packed position_ids (no attention_mask) into a block-diagonal mask:
    each example's logits in the packed row equal its logits run alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trainer.data.batching import PackCollator
    from trainer.data.tokenization import tokenize_example
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    feats = [tokenize_example(tok, {"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": q.upper()}]}, max_length=64)
             for q in ("alpha beta", "gamma delta epsilon zeta eta", "theta")]
    packed = PackCollator()(feats)
    with torch.no_grad():
        row = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        start = 0
        for f in feats:
            n = len(f["input_ids"])
            alone = model(input_ids=torch.tensor([f["input_ids"]]), use_cache=False).logits[0]
            assert torch.allclose(row[start:start + n], alone, atol=1e-5), f"example at {start} saw its neighbours"
            start += n
