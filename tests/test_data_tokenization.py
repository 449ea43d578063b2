"""Assistant-only loss masks must be exact: the labelled tokens decode to exactly each assistant
content plus the template's end-of-turn marker, on ChatML (the tiny model), a Llama-3 layout and
a Qwen3-style template that rewrites <think> blocks."""
from __future__ import annotations

import pytest

from trainer.data.tokenization import (IGNORE_INDEX, DatasetError, TokenizationError, build_dataset,
                                       decode_labelled, end_of_turn_marker, tokenize_example)
from trainer.data.records import normalize_record
from trainer.data.tokenization import _skeleton, _spans_by_sentinel


def _verbatim(tok, messages) -> bool:
    """Whether the exact (sentinel) path applies to this conversation."""
    rendered = tok.apply_chat_template(messages, tokenize=False)
    sk = _skeleton(tok, messages)
    return sk is not None and _spans_by_sentinel(messages, rendered, *sk) is not None

LLAMA3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{%- if loop.index0 == 0 %}{%- set content = bos_token + content %}{%- endif %}"
    "{{- content }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Written for this test after Qwen3's behaviour: a system turn first; an assistant turn after the
# last user query is rendered with a <think> block (empty when it has no reasoning); reasoning is
# split out of the content at </think> and dropped for earlier turns.
QWEN3_STYLE_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role != 'assistant' %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{%- set content = m.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_user %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MULTI = {"messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say a"},
    {"role": "assistant", "content": "a"},
    {"role": "user", "content": "a"},  # same text as the previous answer: must not confuse the mask
    {"role": "assistant", "content": "Two words 🤔 ok.\nSecond line"},
    {"role": "user", "content": "last?"},
    {"role": "assistant", "content": " padded answer "},
]}


@pytest.fixture(scope="module")
def chatml_tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def llama3_tok(tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.add_special_tokens({"additional_special_tokens": [
        "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.bos_token = "<|begin_of_text|>"
    tok.eos_token = "<|eot_id|>"
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def qwen3_tok(tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = QWEN3_STYLE_TEMPLATE
    return tok


def _assistant(record):
    return [m["content"] for m in record["messages"] if m["role"] == "assistant"]


def _check_consistent(out):
    assert len(out["input_ids"]) == len(out["labels"]) == out["length"]
    for i, l in zip(out["input_ids"], out["labels"]):
        assert l == IGNORE_INDEX or l == i


def test_markers_are_learnt_from_the_template(chatml_tok, llama3_tok, qwen3_tok):
    assert end_of_turn_marker(chatml_tok) == "<|im_end|>"
    assert end_of_turn_marker(llama3_tok) == "<|eot_id|>"
    assert end_of_turn_marker(qwen3_tok) == "<|im_end|>"


def test_chatml_masks_every_assistant_turn_exactly(chatml_tok):
    assert _verbatim(chatml_tok, MULTI["messages"])
    out = tokenize_example(chatml_tok, MULTI, max_length=1024, loss_on="assistant")
    _check_consistent(out)
    assert decode_labelled(chatml_tok, out["input_ids"], out["labels"]) == \
        [c + "<|im_end|>" for c in _assistant(MULTI)]
    assert not out["overlong"] and out["full_length"] == out["length"]
    assert out["n_labels"] == sum(1 for l in out["labels"] if l != IGNORE_INDEX)
    # the labelled ids are exactly the tokens of "content<|im_end|>"
    ids = [i for i, l in zip(out["input_ids"], out["labels"]) if l != IGNORE_INDEX]
    expect = []
    for c in _assistant(MULTI):
        expect += chatml_tok(c + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids == expect


def test_chatml_last_assistant_and_all(chatml_tok):
    last = tokenize_example(chatml_tok, MULTI, max_length=1024, loss_on="last_assistant")
    assert decode_labelled(chatml_tok, last["input_ids"], last["labels"]) == [" padded answer <|im_end|>"]
    every = tokenize_example(chatml_tok, MULTI, max_length=1024, loss_on="all")
    assert every["labels"] == every["input_ids"]
    rendered = chatml_tok.apply_chat_template(MULTI["messages"], tokenize=False)
    assert decode_labelled(chatml_tok, every["input_ids"], every["labels"]) == [rendered]
    # same input ids in every mode
    assert last["input_ids"] == every["input_ids"]


def test_llama3_layout_exact(llama3_tok):
    rec = {"messages": [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": "Bye!"},
    ]}
    out = tokenize_example(llama3_tok, rec, max_length=1024)
    _check_consistent(out)
    text = llama3_tok.decode(out["input_ids"], skip_special_tokens=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert text.count("<|begin_of_text|>") == 1  # no second BOS from add_special_tokens
    assert decode_labelled(llama3_tok, out["input_ids"], out["labels"]) == \
        ["Hello there.<|eot_id|>", "Bye!<|eot_id|>"]
    last = tokenize_example(llama3_tok, rec, max_length=1024, loss_on="last_assistant")
    assert decode_labelled(llama3_tok, last["input_ids"], last["labels"]) == ["Bye!<|eot_id|>"]


def test_llama3_trim_template_falls_back_to_search_exactly(llama3_tok):
    # | trim changes the content, so the sentinel path cannot be used; the search must still be exact.
    rec = {"messages": [
        {"role": "user", "content": "  repeat: yes "},
        {"role": "assistant", "content": "\nyes\n"},
        {"role": "user", "content": "yes"},
        {"role": "assistant", "content": " yes  "},
    ]}
    assert not _verbatim(llama3_tok, rec["messages"])
    out = tokenize_example(llama3_tok, rec, max_length=1024)
    assert decode_labelled(llama3_tok, out["input_ids"], out["labels"]) == ["yes<|eot_id|>", "yes<|eot_id|>"]
    # and the labelled runs are the last two "yes" occurrences, not the one in the first user turn
    labelled_pos = [k for k, l in enumerate(out["labels"]) if l != IGNORE_INDEX]
    first_user_yes = llama3_tok.decode(out["input_ids"][:labelled_pos[0]], skip_special_tokens=False)
    assert "repeat: yes" in first_user_yes


def test_qwen3_style_think_handling(qwen3_tok):
    rec = {"messages": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nold reasoning\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "<think>why</think>A2"},
    ]}
    out = tokenize_example(qwen3_tok, rec, max_length=1024)
    _check_consistent(out)
    # earlier turn: the template drops the reasoning -> only the answer is learnt;
    # final turn: the rendered reasoning block is learnt with the answer.
    assert decode_labelled(qwen3_tok, out["input_ids"], out["labels"]) == \
        ["A1<|im_end|>", "<think>\nwhy\n</think>\n\nA2<|im_end|>"]
    plain = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Plain answer"}]}
    out = tokenize_example(qwen3_tok, plain, max_length=1024)
    # the template's empty think block is prompt, not target
    assert decode_labelled(qwen3_tok, out["input_ids"], out["labels"]) == ["Plain answer<|im_end|>"]
    # the template strips the answer's leading newline: the newline before it is template text,
    # not a target (a verbatim template keeps it, and it is learnt there)
    lead = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "\nlead newline"}]}
    out = tokenize_example(qwen3_tok, lead, max_length=1024)
    assert decode_labelled(qwen3_tok, out["input_ids"], out["labels"]) == ["lead newline<|im_end|>"]


def test_truncation(chatml_tok):
    full = tokenize_example(chatml_tok, MULTI, max_length=1024)
    n = full["length"]
    cut = tokenize_example(chatml_tok, MULTI, max_length=n - 5)
    assert cut["overlong"] and cut["full_length"] == n and cut["length"] == n - 5
    assert cut["input_ids"] == full["input_ids"][:n - 5] and cut["labels"] == full["labels"][:n - 5]
    assert cut["n_labels"] < full["n_labels"]
    kept = tokenize_example(chatml_tok, MULTI, max_length=n - 5, truncate=False)
    assert kept["overlong"] and kept["length"] == n and kept["input_ids"] == full["input_ids"]
    exact = tokenize_example(chatml_tok, MULTI, max_length=n)
    assert not exact["overlong"] and exact["length"] == n


def test_text_record_learns_every_token_and_eos(chatml_tok):
    out = tokenize_example(chatml_tok, normalize_record({"text": "hello world"}), max_length=64)
    assert out["labels"] == out["input_ids"]
    assert out["input_ids"][-1] == chatml_tok.eos_token_id
    assert chatml_tok.decode(out["input_ids"]) == "hello world<|im_end|>"


def test_build_dataset_policies(chatml_tok):
    short = normalize_record({"prompt": "hi", "completion": "ok"})
    long = normalize_record({"prompt": "word " * 200, "completion": "done"})
    ds = build_dataset(chatml_tok, [short, long, short], max_length=64, overlong_policy="truncate")
    # the long one truncated inside the prompt has no label left: left out, and said so
    assert len(ds) == 2 and ds.source_indices == [0, 2] and ds.skipped == [(1, "no_labels")]
    assert ds.lengths == [len(ds[0]["input_ids"])] * 2 and ds.n_tokens == sum(ds.lengths)
    ds = build_dataset(chatml_tok, [long, short], max_length=64, overlong_policy="drop")
    assert len(ds) == 1 and ds.skipped == [(0, "overlong")]
    with pytest.raises(DatasetError) as ei:
        build_dataset(chatml_tok, [short, long], max_length=64, overlong_policy="fail")
    assert ei.value.index == 1 and ei.value.reason == "overlong"
    ds = build_dataset(chatml_tok, [long], max_length=64, overlong_policy="drop")
    assert len(ds) == 0


def test_template_refusal_is_a_clear_error(tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = ("{%- for m in messages %}{%- if m.role == 'system' %}"
                         "{{ raise_exception('System role not supported') }}{%- endif %}"
                         "{{- m.role + ': ' + m.content + '\\n' }}{%- endfor %}")
    rec = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                        {"role": "assistant", "content": "a"}]}
    with pytest.raises(TokenizationError) as ei:
        tokenize_example(tok, rec, max_length=64)
    assert ei.value.reason == "template_error" and "System role not supported" in ei.value.message
    # a template without an end-of-turn marker: only the content is learnt; the BPE token " a"
    # merges the template's space with the content's first character and is labelled, so that
    # every character of the answer is a target
    ok = tokenize_example(tok, {"messages": rec["messages"][1:]}, max_length=64)
    assert end_of_turn_marker(tok) == ""
    assert decode_labelled(tok, ok["input_ids"], ok["labels"]) == [" a"]
    tok.chat_template = None
    with pytest.raises(TokenizationError) as ei:
        tokenize_example(tok, {"messages": rec["messages"][1:]}, max_length=64)
    assert ei.value.reason == "no_chat_template"


def test_fuzz_masks_exact_on_both_layouts(chatml_tok, llama3_tok):
    """Random multi-turn conversations whose contents repeat each other and the templates' own
    words: the labelled runs are always exactly the assistant contents + marker."""
    import random
    rng = random.Random(0)
    vocab = ["a", "user", "assistant", "system", "yes", "🤔", "x y", "Hello", "\n", "42", "end"]
    for n in range(60):
        turns = rng.randint(1, 4)
        msgs = [{"role": "system", "content": " ".join(rng.choices(vocab, k=2))}] if rng.random() < 0.5 else []
        for _ in range(turns):
            msgs.append({"role": "user", "content": " ".join(rng.choices(vocab, k=rng.randint(1, 3)))})
            body = " ".join(rng.choices(vocab[:4] + vocab[5:8], k=rng.randint(1, 3)))
            msgs.append({"role": "assistant", "content": body if n % 2 else rng.choice([" ", "\n", ""]) + body + rng.choice([" ", ""])})
        rec = {"messages": msgs}
        contents = [m["content"] for m in msgs if m["role"] == "assistant"]
        out = tokenize_example(chatml_tok, rec, max_length=4096)
        assert decode_labelled(chatml_tok, out["input_ids"], out["labels"]) == [c + "<|im_end|>" for c in contents], msgs
        out = tokenize_example(llama3_tok, rec, max_length=4096)
        assert decode_labelled(llama3_tok, out["input_ids"], out["labels"]) == \
            [c.strip() + "<|eot_id|>" for c in contents], msgs
