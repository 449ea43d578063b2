"""core/logit_penalty.py on real logits of the tiny model: exact arithmetic, schedules by step,
escalation after the stop signal, and plugging into ``model.generate``."""
from __future__ import annotations

import math
import re

import pytest
import torch

from trainer.profiles.logit_penalty import (EOSRewardProcessor, PostStopPenaltyProcessor, StopSignalDetector,
                                ThinkTagPenaltyProcessor, TokenPenaltyProcessor)
from trainer.profiles.penalty_schedule import parse_schedule, schedule_multiplier

SCHEDULE = [{"steps": 4, "multiplier": 8.0}, {"steps": 8, "multiplier": 2.0}]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    # One intra-op thread: on a busy 2-core machine, OpenMP spin-waiting makes each tiny forward ~30x
    # slower. Restored after this module.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    yield model, tok
    torch.set_num_threads(threads)


def prompt_ids(tok, text="Some cats are dogs. Does it follow?", n=1):
    chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(chat, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return ids.repeat(n, 1)


@torch.no_grad()
def last_logits(model, ids):
    return model(input_ids=ids).logits[:, -1, :].float()


def cat(ids, *tokens):
    """Append one token per row."""
    col = torch.tensor([[t] for t in tokens], dtype=ids.dtype)
    return torch.cat([ids, col], dim=1)


class ForceTokens:
    """Test helper (a real processor): forces ``seq`` as the first generated tokens."""

    def __init__(self, prompt_len, seq):
        self.prompt_len, self.seq = prompt_len, list(seq)

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        if step < len(self.seq):
            scores = torch.full_like(scores, -math.inf)
            scores[:, self.seq[step]] = 0.0
        return scores


# ------------------------------------------------------------------ schedules
def test_parse_schedule_and_multiplier():
    w = parse_schedule(SCHEDULE)
    assert w == ((4, 8.0), (8, 2.0))
    assert [schedule_multiplier(w, s) for s in range(14)] == [8.0] * 4 + [2.0] * 8 + [1.0] * 2
    assert schedule_multiplier((), 0) == 1.0
    for bad, msg in [([{"steps": 0, "multiplier": 2}], "schedule[0].steps"),
                     ([{"steps": 2}], "missing 'multiplier'"),
                     ([{"steps": 2, "multiplier": -1}], "schedule[0].multiplier"),
                     ([{"steps": 2, "multiplier": 1, "x": 1}], "unknown key"),
                     ([{"steps": True, "multiplier": 1}], "steps"),
                     ("fast", "must be a list")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            parse_schedule(bad)


# ------------------------------------------------------------------ token penalty
def test_token_penalty_exact_values_on_real_logits(lm):
    model, tok = lm
    ids = prompt_ids(tok)
    logits = last_logits(model, ids)
    neg = int(logits[0].argmin())  # a negative logit: must go DOWN, not up
    top = int(logits[0].argmax())
    assert logits[0, neg] < 0
    before = logits.clone()
    proc = TokenPenaltyProcessor([neg, top], penalty=2.5)
    out = proc(ids, logits)
    assert torch.equal(logits, before), "input scores must not be modified"
    expected = logits.clone()
    expected[:, [neg, top]] = expected[:, [neg, top]] - 2.5
    assert torch.equal(out, expected)
    assert out[0, neg] < logits[0, neg] and out[0, top] < logits[0, top]
    # -inf stays -inf; a negative penalty is a bonus
    masked = logits.clone()
    masked[0, top] = -math.inf
    assert TokenPenaltyProcessor([top], 3.0)(ids, masked)[0, top] == -math.inf
    assert torch.equal(TokenPenaltyProcessor([top], -1.5)(ids, logits)[0, top], logits[0, top] + 1.5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenPenaltyProcessor([logits.shape[-1]], 1.0)(ids, logits)
    with pytest.raises(ValueError, match="finite"):
        TokenPenaltyProcessor([1], float("nan"))


def test_token_penalty_schedule_by_generated_step(lm):
    model, tok = lm
    ids = prompt_ids(tok, n=2)
    ids[1, 3] = 50  # two different prompts of one length
    target = 7
    proc = TokenPenaltyProcessor([target], penalty=1.5, schedule=SCHEDULE)
    seen = []
    for step in range(14):
        logits = last_logits(model, ids)
        out = proc(ids, logits)
        delta = logits[:, target] - out[:, target]
        expected = 1.5 * (8.0 if step < 4 else 2.0 if step < 12 else 1.0)
        assert torch.equal(out[:, target], logits[:, target] - expected), step
        assert torch.allclose(delta, torch.full_like(delta, expected))
        other = torch.ones(logits.shape[-1], dtype=torch.bool)
        other[target] = False
        assert torch.equal(out[:, other], logits[:, other])
        seen.append(round(float(delta[0]), 4))
        ids = cat(ids, *out.argmax(-1).tolist())
    assert seen == [12.0] * 4 + [3.0] * 8 + [1.5] * 2
    # beam search may reorder rows: still the same generation (step 14 -> baseline)
    swapped = ids[[1, 0]]
    logits = last_logits(model, swapped)
    assert torch.equal(proc(swapped, logits)[:, target], logits[:, target] - 1.5)
    assert torch.equal(proc(swapped, logits)[:, target], logits[:, target] - 1.5)  # repeated call
    # a new prompt starts a new generation: step 0 again (x8)
    fresh = prompt_ids(tok, "Another question", n=2)
    lg = last_logits(model, fresh)
    assert torch.equal(proc(fresh, lg)[:, target], lg[:, target] - 12.0)
    # the same prompt exactly one token longer than the last call, but not an extension: new generation
    other = cat(prompt_ids(tok, "Another question!", n=2)[:, : fresh.shape[1]], 9, 9)
    proc(fresh, lg)
    lg2 = last_logits(model, other)
    assert torch.equal(proc(other, lg2)[:, target], lg2[:, target] - 12.0)
    proc.reset()
    assert torch.equal(proc(ids, logits)[:, target], logits[:, target] - 12.0)


# ------------------------------------------------------------------ stop signal
def test_post_stop_penalty_escalates_and_spares_eos(lm):
    model, tok = lm
    eos = tok.eos_token_id
    stop = [11, 12]  # a two-token stop sequence
    ids = prompt_ids(tok, n=2)
    # the stop sequence inside the PROMPT does not count
    ids = torch.cat([ids, torch.tensor([stop, stop])], dim=1)
    proc = PostStopPenaltyProcessor([stop], base_penalty=3.0, growth=2.0, eos_token_ids=[eos],
                                    max_penalty=8.0)
    logits = last_logits(model, ids)
    assert torch.equal(proc(ids, logits), logits)
    ids = cat(ids, 11, 20)  # row 0 starts the stop sequence
    logits = last_logits(model, ids)
    assert torch.equal(proc(ids, logits), logits)
    ids = cat(ids, 12, 21)  # row 0 completes it; row 1 never does
    expected_pen = [3.0, 5.0, 7.0, 8.0, 8.0]  # base + growth * k, capped at max_penalty
    for k, pen in enumerate(expected_pen):
        logits = last_logits(model, ids)
        out = proc(ids, logits)
        exp0 = logits[0] - pen
        exp0[eos] = logits[0, eos]
        assert torch.equal(out[0], exp0), k
        assert torch.equal(out[1], logits[1]), "row without a stop signal must be untouched"
        ids = cat(ids, 30 + k, 40 + k)
    assert proc.penalty_after(0) == 3.0 and proc.penalty_after(10) == 8.0


def test_stop_strings_survive_bpe_merging(lm):
    """'🛑🛑' is one token in the tiny tokenizer, '🛑' another: text matching catches both spellings."""
    _, tok = lm
    one = tok.encode("🛑", add_special_tokens=False)
    two = tok.encode("🛑🛑", add_special_tokens=False)
    assert len(two) == 1 and one != two
    base = prompt_ids(tok)
    for spelling in (two, one + one, tok.encode("ok 🛑🛑🛑", add_special_tokens=False)):
        det = StopSignalDetector(["🛑🛑"], tokenizer=tok)
        ids = base
        results = [det.update(ids)]
        for t in spelling:
            ids = cat(ids, t)
            results.append(det.update(ids))
        assert results[-1] == [0], (spelling, results)
        assert all(r == [None] for r in results[:-1]), (spelling, results)
        ids = cat(ids, 5)
        assert det.update(ids) == [1]
    det = StopSignalDetector(["🛑🛑"], tokenizer=tok)
    det.update(base)
    assert det.update(cat(base, one[0])) == [None]
    with pytest.raises(ValueError, match="needs a tokenizer"):
        StopSignalDetector(["🛑🛑"])
    with pytest.raises(ValueError, match="no stop sequences"):
        StopSignalDetector([])


def test_eos_reward_after_stop_only(lm):
    model, tok = lm
    eos_ids = [tok.eos_token_id, tok.pad_token_id]
    ids = prompt_ids(tok, n=2)
    proc = EOSRewardProcessor(eos_ids, reward=4.0, stop_sequences=[99])
    logits = last_logits(model, ids)
    assert torch.equal(proc(ids, logits), logits)
    ids = cat(ids, 99, 98)
    logits = last_logits(model, ids)
    out = proc(ids, logits)
    exp = logits.clone()
    exp[0, eos_ids] = exp[0, eos_ids] + 4.0
    assert torch.equal(out, exp)
    always = EOSRewardProcessor(tok.eos_token_id, reward=1.0)
    out = always(ids, logits)
    assert torch.equal(out[:, tok.eos_token_id], logits[:, tok.eos_token_id] + 1.0)
    with pytest.raises(ValueError, match="EOS"):
        EOSRewardProcessor(None, 1.0)


# ------------------------------------------------------------------ <think>
def test_think_tag_penalty_single_token_tags(lm):
    model, tok = lm
    think, end = tok.convert_tokens_to_ids("<think>"), tok.convert_tokens_to_ids("</think>")
    proc = ThinkTagPenaltyProcessor(tok, penalty=5.0, schedule=[{"steps": 1, "multiplier": 3.0}])
    assert sorted(proc.token_ids) == sorted([think, end]) and proc.sequences == []
    ids = prompt_ids(tok)
    logits = last_logits(model, ids)
    out = proc(ids, logits)
    exp = logits.clone()
    exp[:, [think, end]] = exp[:, [think, end]] - 15.0
    assert torch.equal(out, exp)
    ids = cat(ids, int(out.argmax()))
    logits = last_logits(model, ids)
    exp = logits.clone()
    exp[:, [think, end]] = exp[:, [think, end]] - 5.0
    assert torch.equal(proc(ids, logits), exp)


def test_think_tag_penalty_multi_token_tag_penalises_last_token_in_context(lm):
    model, tok = lm
    tag = "<<ANS_END>>"  # five tokens in the tiny tokenizer: << ANS _ END >>
    seq = tok.encode(tag, add_special_tokens=False)
    assert len(seq) > 2
    proc = ThinkTagPenaltyProcessor(tok, penalty=2.0, tags=(tag,))
    assert tuple(seq) in proc.sequences and proc.token_ids == []
    ids = prompt_ids(tok)
    logits = last_logits(model, ids)
    assert torch.equal(proc(ids, logits), logits)  # '<<' itself is not penalised
    for t in seq[:-1]:
        ids = cat(ids, t)
        logits = last_logits(model, ids)
        out = proc(ids, logits)
    exp = logits.clone()
    exp[0, seq[-1]] -= 2.0
    assert torch.equal(out, exp)


# ------------------------------------------------------------------ generate()
def test_processors_plug_into_generate(lm):
    from transformers import LogitsProcessorList
    model, tok = lm
    ids = prompt_ids(tok)
    eos = tok.eos_token_id
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=[eos])
    base = model.generate(ids, **kw)[0, ids.shape[1]:].tolist()
    first = base[0]
    # a huge penalty on the greedy first token: it is never generated
    pen = LogitsProcessorList([TokenPenaltyProcessor([first], 1e4, schedule=SCHEDULE)])
    out = model.generate(ids, logits_processor=pen, **kw)[0, ids.shape[1]:].tolist()
    assert first not in out and out != base
    # the greedy first token declared a stop signal: the very next token is EOS
    stopper = LogitsProcessorList([PostStopPenaltyProcessor([first], base_penalty=50.0, growth=10.0,
                                                            eos_token_ids=[eos]),
                                   EOSRewardProcessor(eos, 50.0, stop_sequences=[first])])
    for _ in range(2):  # the same list serves a second generate() call (state resets)
        out = model.generate(ids, logits_processor=stopper, **kw)[0, ids.shape[1]:].tolist()
        assert out == [first, eos]


def test_profile_processors_end_generation_after_stop_run(lm):
    """emoji_think / regime3 processor lists in generate(): once the stop text is out, EOS follows."""
    from transformers import LogitsProcessorList
    from trainer.profiles import get_profile
    model, tok = lm
    eos = tok.eos_token_id
    ids = prompt_ids(tok)
    kw = dict(max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=[eos])
    cases = [("emoji_think", "🤔🤔\nyes\n🛑🛑"), ("regime3", " <<ANS_START>> (add 1 2) <<ANS_END>>")]
    for name, forced_text in cases:
        profile = get_profile(name)
        forced = tok.encode(forced_text, add_special_tokens=False)
        procs = profile.build_logits_processors(tok)
        lst = LogitsProcessorList(list(procs) + [ForceTokens(ids.shape[1], forced)])
        out = model.generate(ids, logits_processor=lst, **kw)[0, ids.shape[1]:].tolist()
        assert out == forced + [eos], (name, tok.decode(out))
        text = tok.decode(out, skip_special_tokens=True)
        assert profile.postprocess(text).strip() in (forced_text.strip(), "🤔🤔\nyes")
    # <think> is pushed down hard from the first step
    think = tok.convert_tokens_to_ids("<think>")
    procs = get_profile("emoji_think").build_logits_processors(tok)
    logits = last_logits(model, ids)
    out = procs(ids, logits)
    assert torch.equal(out[:, think], logits[:, think] - 80.0)  # 10 x 8 (first window)
