"""trainer.profiles.generation: the one rule for EOS ids and stop strings that the server
(TextStream, model loader), the evaluator (stopping criteria) and the profiles (postprocess) share."""
from __future__ import annotations

import pytest

from trainer.profiles.generation import (cut_at_stop, eos_token_ids, find_stop, partial_stop_len,
                                         profile_stop_strings, stop_strings)


def test_no_stop_leaves_the_text_alone():
    assert find_stop("all cats are mammals", ["<<END>>", "STOP"]) == -1
    assert cut_at_stop("all cats are mammals", ["<<END>>"]) == "all cats are mammals"
    assert cut_at_stop("all cats are mammals", []) == "all cats are mammals"
    assert cut_at_stop("", ["x"]) == ""


def test_earliest_stop_wins_when_stops_overlap():
    # "ab" and "bc" overlap in "xabcd": the one that begins first cuts
    assert find_stop("xabcd", ["bc", "ab"]) == 1
    assert cut_at_stop("xabcd", ["bc", "ab"]) == "x"
    # one stop inside another: the outer one begins first
    assert cut_at_stop("answer STOP now", ["TOP", "STOP"]) == "answer "
    # the first occurrence, not a later one
    assert cut_at_stop("a<E>b<E>c", ["<E>"]) == "a"
    # empty stop strings never match (they would cut everything)
    assert cut_at_stop("abc", ["", "c"]) == "ab"
    # searching from an offset ignores stops before it
    assert find_stop("STOP then STOP", ["STOP"], start=1) == 10


def test_partial_stop_is_held_back_until_it_completes_or_breaks():
    assert partial_stop_len("abc ST", ["STOP"]) == 2
    assert partial_stop_len("abc STO", ["<<X>>", "STOP"]) == 3
    assert partial_stop_len("abc STOP", ["STOP"]) == 0  # complete: find_stop's business, not partial
    assert partial_stop_len("abc SX", ["STOP"]) == 0
    assert partial_stop_len("abc", []) == 0
    assert partial_stop_len("ST", ["STOP"], start=2) == 0  # already handed out: nothing to hold back
    # the longest possible prefix counts when several stops could still complete
    assert partial_stop_len("x <<AN", ["<<ANS_END>>", "ANSWER"]) == 4


def test_stop_split_across_chunks_is_found_once_the_chunks_join():
    chunks = ["The answer", " is valid <<ANS", "_E", "ND>> and more"]
    text, cut = "", -1
    for n, chunk in enumerate(chunks):
        text += chunk
        cut = find_stop(text, ["<<ANS_END>>"])
        if cut >= 0:
            break
        assert partial_stop_len(text, ["<<ANS_END>>"]) == (0 if n == 0 else len(text) - text.index("<<ANS"))
    assert n == 3 and text[:cut] == "The answer is valid "


def test_stop_strings_are_filtered_and_deduplicated():
    assert stop_strings(["a", "", None, 3, "b", "a"]) == ["a", "b"]
    assert stop_strings(None) == []
    from trainer.profiles import get_profile
    assert profile_stop_strings(get_profile("plain")) == []
    assert profile_stop_strings(get_profile("regime3")) == ["<<ANS_END>>"]


def test_base_profile_postprocess_cuts_like_the_server():
    """DataProfile.postprocess (profiles that keep the default) cuts with the shared rule."""
    from trainer.profiles import get_profile
    profile = get_profile("plain")
    profile.stop_sequences = ["<<END>>", "STOP"]  # plain has none of its own
    text = "all cats are mammals STOP <<END>> trailing"
    assert profile.postprocess(text) == cut_at_stop(text, profile_stop_strings(profile)) == "all cats are mammals "


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def test_eos_ids_merge_model_and_tokenizer_without_duplicates(tiny):
    model, tok = tiny
    assert tok.eos_token_id is not None
    saved = model.generation_config.eos_token_id
    try:
        model.generation_config.eos_token_id = [7, tok.eos_token_id, 7]
        assert eos_token_ids(model, tok) == [7, tok.eos_token_id]
        model.generation_config.eos_token_id = tok.eos_token_id
        assert eos_token_ids(model, tok) == [tok.eos_token_id]
        model.generation_config.eos_token_id = None
        assert eos_token_ids(model, tok) == [tok.eos_token_id]
    finally:
        model.generation_config.eos_token_id = saved
    assert eos_token_ids(None, tok) == [tok.eos_token_id]


def test_text_stream_cuts_where_cut_at_stop_cuts_with_a_stop_spread_over_tokens(tiny):
    from trainer.generation.text_stream import TextStream
    _, tok = tiny
    stops = ["<<ANS_END>>", "END>> and"]  # overlapping stops: the earlier one wins
    text = "valid <<ANS_END>> and then more"
    assert len(tok("<<ANS_END>>", add_special_tokens=False)["input_ids"]) > 1
    ts = TextStream(tok, stops)
    pieces = [ts.push(i) for i in tok(text, add_special_tokens=False)["input_ids"]]
    pieces.append(ts.flush())
    assert "".join(pieces) == cut_at_stop(text, stops) == "valid "
    assert ts.stopped and not any("<" in p for p in pieces)


def test_evaluator_stops_a_row_when_its_generated_tokens_complete_a_stop(tiny):
    import torch

    from trainer.generation.reference import stopping_criteria
    _, tok = tiny
    prompt = tok("question <<ANS_END>> ?", add_special_tokens=False)["input_ids"]  # a stop in the prompt
    gen = tok(" answer <<ANS_END>>", add_special_tokens=False)["input_ids"]
    crit = stopping_criteria(tok, ["<<ANS_END>>"], len(prompt))
    done_at = None
    for n in range(1, len(gen) + 1):
        ids = torch.tensor([prompt + gen[:n]])
        if bool(crit(ids, None)[0]):
            done_at = n
            break
    # not before the last piece of the stop string (the prompt's copy does not count), then stopped
    assert done_at == len(gen)


def test_text_stream_decodes_as_the_tokenizer_does(tiny):
    import random

    from transformers import PreTrainedTokenizerBase

    from trainer.generation.text_stream import plain_decoder
    _, tok = tiny
    rng = random.Random(0)
    special = sorted(tok.all_special_ids)
    assert special
    seqs = [[rng.randrange(len(tok)) for _ in range(rng.randint(0, 12))] + rng.sample(special, 1) for _ in range(300)]
    fast = plain_decoder(tok)
    assert fast.__code__ is not plain_decoder(object()).__code__  # the direct path, not the fallback...
    for ids in seqs:  # ...with the tokenizer's own answer, special tokens skipped
        assert fast(ids) == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    class Custom(type(tok)):  # a tokenizer that decodes its own way keeps it
        def decode(self, token_ids, **kw):
            return "custom:" + PreTrainedTokenizerBase.decode(self, token_ids, **kw)

    custom = Custom.__new__(Custom)
    custom.__dict__.update(tok.__dict__)
    assert plain_decoder(custom)(seqs[0]).startswith("custom:")
