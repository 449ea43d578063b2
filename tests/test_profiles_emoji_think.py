"""emoji_think: exact framing, counts and instructions, determinism, think tags, generation side."""
from __future__ import annotations

import copy
import random
import re
from collections import Counter

import pytest

from trainer.profiles import get_profile
from trainer.profiles.emoji_think import (STOP_COUNT_WORDS, STOP_EMOJI, THINK_COUNT_WORDS, THINK_EMOJI,
                                          pattern_for)

WORD_TO_THINK = {v: k for k, v in THINK_COUNT_WORDS.items()}
WORD_TO_STOP = {v: k for k, v in STOP_COUNT_WORDS.items()}
INSTR_RE = re.compile(r"\n\nFor this task, think with (\S+) /([a-z]+)/ times\.\n\n"
                      r"When finished, emit (\S+) /([a-z ]+)/ to signal completion\.$")


def ex(q="Are all cats mammals?", a="Yes.", meta=None):
    rec = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    if meta is not None:
        rec["metadata"] = meta
    return rec


def run_length(text, emoji, start=True):
    n = 0
    while (text.startswith(emoji * (n + 1)) if start else text.endswith(emoji * (n + 1))):
        n += 1
    return n


def test_pools_are_ten_distinct_emoji_shared_with_the_tiny_model():
    from tools.models import make_tiny_model
    assert len(THINK_EMOJI) == len(set(THINK_EMOJI)) == 10
    assert len(STOP_EMOJI) == len(set(STOP_EMOJI)) == 10
    assert not set(THINK_EMOJI) & set(STOP_EMOJI)
    assert THINK_EMOJI == make_tiny_model.THINK_EMOJI and STOP_EMOJI == make_tiny_model.STOP_EMOJI


def test_every_example_is_framed_exactly_as_its_instructions_say():
    p = get_profile("emoji_think")
    think_counts, stop_counts, thinks, stops = Counter(), Counter(), Counter(), Counter()
    for i in range(400):
        out = p.transform_example(ex(a=f"Answer {i}."), i)
        user, reply = out["messages"][0]["content"], out["messages"][1]["content"]
        m = INSTR_RE.search(user)
        assert m and user.startswith("Are all cats mammals?\n\nFor this task"), user
        t_emoji, t_word, s_emoji, s_word = m.groups()
        n, k = WORD_TO_THINK[t_word], WORD_TO_STOP[s_word]
        assert 2 <= n <= 8 and 2 <= k <= 4
        assert reply == t_emoji * n + "\n" + f"Answer {i}." + "\n" + s_emoji * k
        assert run_length(reply, t_emoji) == n and run_length(reply, s_emoji, start=False) == k
        assert out["metadata"]["emoji_think"] == {"think_emoji": t_emoji, "think_count": n,
                                                  "stop_emoji": s_emoji, "stop_count": k}
        think_counts[n] += 1
        stop_counts[k] += 1
        thinks[t_emoji] += 1
        stops[s_emoji] += 1
    assert set(think_counts) == set(range(2, 9)) and set(stop_counts) == {2, 3, 4}
    assert set(thinks) == set(THINK_EMOJI) and set(stops) == set(STOP_EMOJI)


def test_count_words():
    assert THINK_COUNT_WORDS == {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
    assert STOP_COUNT_WORDS == {2: "twice", 3: "three times", 4: "four times"}
    pat = pattern_for(0)
    assert pat.think_instruction == f"For this task, think with {pat.think_emoji} /four/ times."
    assert pat.stop_instruction == f"When finished, emit {pat.stop_emoji} /three times/ to signal completion."


def test_same_index_same_output_and_golden_patterns():
    p, q = get_profile("emoji_think"), get_profile("emoji_think")
    for i in (0, 1, 17, 10_000):
        assert p.transform_example(ex(), i) == q.transform_example(ex(), i)
    # reproducible across processes and Python runs (string-seeded private RNG)
    assert [tuple(pattern_for(i).as_dict().values()) for i in range(3)] == [
        ("💭", 4, "🏁", 3), ("💡", 8, "🚦", 2), ("⚙️", 5, "🛑", 4)]
    # the global random state is neither used nor disturbed
    random.seed(123)
    a = random.random()
    random.seed(123)
    p.transform_example(ex(), 7)
    assert random.random() == a
    # the seed option gives another assignment
    other = get_profile("emoji_think", {"seed": 1})
    assert any(other.pattern(i) != p.pattern(i) for i in range(10))


def test_input_not_mutated_and_idempotent():
    p = get_profile("emoji_think")
    src = ex(meta={"k": [1]})
    keep = copy.deepcopy(src)
    once = p.transform_example(src, 3, "SYS")
    assert src == keep
    assert once["metadata"]["k"] == [1] and "emoji_think" not in src["metadata"]
    assert p.transform_example(once, 3, "SYS") == once
    # re-framing under another index replaces the pattern: one instruction pair, matching the reply
    again = p.transform_example(once, 4, "SYS")
    user, reply = again["messages"][1]["content"], again["messages"][2]["content"]
    assert user.count("For this task") == 1 and user.count("When finished") == 1
    pat = pattern_for(4)
    assert reply == pat.prefix + "Yes." + pat.suffix and user.endswith(pat.instructions)


def test_think_tags_stripped_content_kept_by_default():
    a = "<think>\nAll cats are mammals by definition.\n</think>\nYes."
    out = get_profile("emoji_think").transform_example(ex(q="Q <think>keep</think>", a=a), 0)
    pat = pattern_for(0)
    reply = out["messages"][1]["content"]
    assert reply == pat.prefix + "All cats are mammals by definition.\n\nYes." + pat.suffix
    assert "<think>" not in reply and "</think>" not in reply
    assert out["messages"][0]["content"].startswith("Q <think>keep</think>"), "user turns are not touched"
    drop = get_profile("emoji_think", {"strip_think_content": True}).transform_example(ex(a=a), 0)
    assert drop["messages"][1]["content"] == pat.prefix + "Yes." + pat.suffix


def test_multi_turn_and_system_prompt():
    p = get_profile("emoji_think")
    rec = {"messages": [{"role": "system", "content": "old"},
                        {"role": "user", "content": "one"}, {"role": "assistant", "content": "1"},
                        {"role": "user", "content": "two"}, {"role": "assistant", "content": "2"}]}
    sp = p.render_system_prompt("Date: {date}", __import__("datetime").datetime(2025, 1, 2))
    out = p.transform_example(rec, 9, sp)
    pat = pattern_for(9)
    assert [m["content"] for m in out["messages"]] == [
        "Date: 2025-01-02", "one", pat.prefix + "1" + pat.suffix,
        "two\n\n" + pat.instructions, pat.prefix + "2" + pat.suffix]


def test_validation():
    p = get_profile("emoji_think")
    assert p.validate_example(ex()) == []
    assert any("needs a user message" in x for x in p.validate_example({"text": "just text"}))
    assert any("messages[1] (assistant) is empty" in x for x in p.validate_example(ex(a="<think></think>")))
    with pytest.raises(ValueError, match="emoji_think: example 2 cannot be used"):
        p.transform_example(ex(a="  "), 2)


def test_prepare_messages_matches_training_prompt():
    p = get_profile("emoji_think")
    rec = {"messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"},
                        {"role": "user", "content": "two"}, {"role": "assistant", "content": "2"}]}
    trained = p.transform_example(rec, 5, "S")["messages"]
    history = copy.deepcopy(rec["messages"][:-1])
    prepared = p.prepare_messages(history, index=5, system_prompt="S")
    assert prepared == trained[:-1]
    assert history == rec["messages"][:-1], "caller's messages are not changed"
    prefill = p.prepare_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": "🤔"}], 0)
    assert prefill[-1] == {"role": "assistant", "content": "🤔"}
    assert prefill[0]["content"] == "q\n\n" + pattern_for(0).instructions


def test_stop_sequences_postprocess_and_extract_answer():
    p = get_profile("emoji_think")
    assert all(e * 2 in p.stop_sequences for e in STOP_EMOJI)
    text = "🤔🤔🤔\nPremises...\nAnswer: Valid\n🛑🛑🛑<|im_end|> trailing junk"
    assert p.postprocess(text) == "🤔🤔🤔\nPremises...\nAnswer: Valid"
    assert p.extract_answer(text) == "Valid" and p.normalize_answer(p.extract_answer(text)) == "valid"
    assert p.extract_answer("💭💭\nall cats are mammals\n✅✅") == "all cats are mammals"
    assert p.extract_answer("💭💭 invalid 🔒") == "invalid"  # a cut-off single stop emoji
    assert p.extract_answer("🧠🧠🧠\n🛑🛑") is None
    assert p.postprocess("no stop here 🛑 one") == "no stop here 🛑 one"
    # the reply the profile trains on round-trips to its answer
    out = p.transform_example(ex(a="Answer: invalid"), 11)
    assert p.extract_answer(out["messages"][1]["content"]) == "invalid"


def test_logits_processor_list(tiny_model_dir):
    from transformers import AutoTokenizer
    from trainer.profiles.logit_penalty import EOSRewardProcessor, PostStopPenaltyProcessor, ThinkTagPenaltyProcessor
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    procs = get_profile("emoji_think").build_logits_processors(tok)
    assert [type(x) for x in procs] == [ThinkTagPenaltyProcessor, PostStopPenaltyProcessor, EOSRewardProcessor]
    think_ids = tok.convert_tokens_to_ids(["<think>", "</think>"])
    assert sorted(procs[0].token_ids) == sorted(think_ids) and procs[0].schedule == ((4, 8.0), (8, 2.0))
    assert procs[1].eos_token_ids == [tok.eos_token_id] and procs[1].penalty_after(2) == 20.0
    assert procs[1].detector.strings == p_stops() and procs[2].reward == 10.0
    off = get_profile("emoji_think", {"think_penalty": 0, "post_stop_base_penalty": 0, "post_stop_growth": 0,
                                      "eos_reward": 0}).build_logits_processors(tok)
    assert len(off) == 0


def p_stops():
    return get_profile("emoji_think").stop_sequences
