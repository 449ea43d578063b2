"""The validator reports every bad line with its number, field and reason; whole-file problems
get a file_error; any line error makes the file untrainable."""
from __future__ import annotations

import json
import os

import pytest

from trainer.data.validator import ValidationReport, format_issues, validate_file
from trainer.data.records import RecordError, normalize_record
from tests.conftest import chat_records, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _line(obj) -> bytes:
    return (obj if isinstance(obj, str) else json.dumps(obj)).encode("utf-8") + b"\n"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_corrupt_file_reports_every_bad_line(tmp_path):
    u = {"role": "user", "content": "q"}
    cases = [  # (line content, expected field, expected reason) ; None = valid / blank
        (GOOD, None, None),
        ('{"messages": [', "", "invalid_json"),
        ("[1, 2]", "", "not_object"),
        ({"foo": 1}, "messages", "missing_messages"),
        ({"messages": []}, "messages", "empty_messages"),
        ({"messages": [u, {"role": "robot", "content": "x"}]}, "messages[1].role", "unknown_role"),
        ({"messages": [u, {"role": "assistant", "content": 42}]}, "messages[1].content", "non_string_content"),
        ({"messages": [u, {"role": "assistant"}]}, "messages[1].content", "missing_content"),
        ({"messages": [u, u]}, "messages", "no_assistant_turn"),
        ({"messages": [u, {"role": "assistant", "content": "  "}]}, "messages[1].content", "empty_assistant"),
        (b'{"text": "caf\xe9"}\n', "", "invalid_utf8"),
        ("", None, None),  # blank line: skipped quietly
        (json.dumps({"text": "x" * 3000}), "", "line_too_long"),
        ({"messages": "nope"}, "messages", "invalid_messages"),
        ({"messages": [u, "str"]}, "messages[1]", "invalid_message"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "missing_role"),
        ({"prompt": "p"}, "completion", "missing_field"),
        ({"text": ""}, "text", "empty_text"),
        ({**GOOD, "metadata": [1]}, "metadata", "invalid_metadata"),
        ({"instruction": "do", "output": "done", "metadata": {"src": "a"}}, None, None),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(c if isinstance(c, bytes) else _line(c) for c, _, _ in cases))
    r = validate_file(path, max_line_bytes=2048)
    assert not r.ok and r.file_error is None
    expected = [(i, f, reason) for i, (_, f, reason) in enumerate(cases, 1) if reason]
    assert [(e.line, e.field, e.reason) for e in r.errors] == expected
    assert r.n_errors == len(expected) and r.n_lines == len(cases)
    assert r.n_valid == 2 and r.example_lines == [1, len(cases)]
    assert r.examples[1] == {"messages": [{"role": "user", "content": "do"},
                                          {"role": "assistant", "content": "done"}], "metadata": {"src": "a"}}
    d = json.loads(json.dumps(r.to_dict()))
    assert d["ok"] is False and d["error_counts"]["invalid_json"] == 1
    assert d["errors"][0] == {"line": 2, "field": "", "reason": "invalid_json",
                              "message": r.errors[0].message}
    lines = format_issues(r)
    assert lines[0].startswith(f"{path}:2: <line>: invalid_json:")
    assert any(l.startswith(f"{path}:6: messages[1].role: unknown_role:") for l in lines)
    assert "NOT TRAINABLE" in r.summary() and str(len(expected)) in r.summary()
    # max_errors caps the list, not the count
    capped = validate_file(path, max_line_bytes=2048, max_errors=3)
    assert len(capped.errors) == 3 and capped.n_errors == len(expected) and not capped.ok


def test_good_file_passes(tmp_path):
    recs = chat_records(20)
    path = write_jsonl(tmp_path / "good.jsonl", recs + [""])
    r = validate_file(path)
    assert r.ok and r.file_error is None and not r.errors and not r.warnings
    assert r.n_examples == r.n_valid == 20 and r.n_lines == 21
    assert [e["messages"] for e in r.examples] == [x["messages"] for x in recs]
    assert r.n_tokens is None and "OK" in r.summary()


def test_bom_and_crlf(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + json.dumps({"text": "t"}).encode() + b"\r\n")
    r = validate_file(path)
    assert r.ok and r.n_examples == 2


def test_duplicates(tmp_path):
    other = {"prompt": "hi", "completion": "hello"}  # normalizes to the same example as GOOD
    path = write_jsonl(tmp_path / "dup.jsonl", [GOOD, {"text": "t"}, GOOD, other])
    r = validate_file(path)
    assert r.ok and r.n_duplicates == 2 and r.n_examples == 2 and r.example_lines == [1, 2]
    assert [(w.line, w.reason) for w in r.warnings] == [(3, "duplicate"), (4, "duplicate")]
    assert "line 1" in r.warnings[0].message
    kept = validate_file(path, drop_duplicates=False)
    assert kept.ok and kept.n_duplicates == 2 and kept.n_examples == 4


def test_overlong_policies(tmp_path, tok):
    long = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": " ".join(["alpha"] * 100)}]}
    path = write_jsonl(tmp_path / "long.jsonl", [GOOD, long])
    r = validate_file(path, tokenizer=tok, max_length=48, overlong_policy="truncate")
    assert r.ok and r.n_overlong == 1 and r.n_examples == 2
    assert [(w.line, w.reason) for w in r.warnings] == [(2, "overlong")] and "truncated" in r.warnings[0].message
    assert 0 < r.n_tokens <= 2 * 48
    r = validate_file(path, tokenizer=tok, max_length=48, overlong_policy="drop")
    assert r.ok and r.n_overlong == 1 and r.n_examples == 1 and r.example_lines == [1]
    assert [(w.line, w.reason) for w in r.warnings] == [(2, "overlong")]
    r = validate_file(path, tokenizer=tok, max_length=48, overlong_policy="fail")
    assert not r.ok and [(e.line, e.reason) for e in r.errors] == [(2, "overlong")]
    assert "tokens > max_length 48" in r.errors[0].message
    # without a tokenizer, no token checks
    assert validate_file(path, max_length=48, overlong_policy="fail").ok
    # everything dropped -> not trainable
    only = write_jsonl(tmp_path / "only_long.jsonl", [long])
    r = validate_file(only, tokenizer=tok, max_length=48, overlong_policy="drop")
    assert not r.ok and r.file_error == "no_valid_example"
    # truncated inside the prompt: nothing left to learn -> reported and dropped
    prompt_long = {"messages": [{"role": "user", "content": " ".join(["beta"] * 100)},
                                {"role": "assistant", "content": "ok"}]}
    p2 = write_jsonl(tmp_path / "prompt_long.jsonl", [GOOD, prompt_long])
    r = validate_file(p2, tokenizer=tok, max_length=48)
    assert r.ok and r.n_examples == 1
    assert [(w.line, w.reason) for w in r.warnings] == [(2, "overlong"), (2, "no_labels_after_truncation")]


def test_profile_problems_are_line_errors(tmp_path):
    class NoEmoji:
        def validate_example(self, record):
            text = json.dumps(record, ensure_ascii=False)
            return ["contains an emoji"] if "🤔" in text else []

    bad = {"messages": [{"role": "user", "content": "hmm 🤔"}, {"role": "assistant", "content": "ok"}]}
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, bad])
    r = validate_file(path, profile=NoEmoji())
    assert not r.ok and [(e.line, e.reason, e.message) for e in r.errors] == [(2, "profile_invalid", "contains an emoji")]


def test_template_error_is_a_line_error(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = ("{%- for m in messages %}{%- if m.role == 'system' %}"
                         "{{ raise_exception('no system') }}{%- endif %}"
                         "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}")
    sysrec = {"messages": [{"role": "system", "content": "s"}, *GOOD["messages"]]}
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD, sysrec])
    r = validate_file(path, tokenizer=tok)
    assert not r.ok and [(e.line, e.reason) for e in r.errors] == [(2, "template_error")]


def test_invalid_utf8_line_keeps_going(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(_line(GOOD) + b'{"text": "\xc3\x28"}\n' + _line({"text": "fine"}))
    r = validate_file(path)
    assert [(e.line, e.reason) for e in r.errors] == [(2, "invalid_utf8")] and r.n_valid == 2 and not r.ok


@pytest.mark.parametrize("kind,code", [
    ("binary", "binary"), ("binary_late", "binary"), ("empty", "empty"), ("blank", "empty"),
    ("wrong_ext", "wrong_extension"), ("missing", "missing"), ("dir", "is_directory"),
    ("fifo", "not_regular_file"),
])
def test_file_errors(tmp_path, kind, code):
    p = tmp_path / "f.jsonl"
    if kind == "binary":
        p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    elif kind == "binary_late":
        p.write_bytes(_line(GOOD) * 2000 + b"\x00\x01\x02\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "blank":
        p.write_bytes(b"\n  \n\r\n")
    elif kind == "wrong_ext":
        p = tmp_path / "f.json"
        p.write_bytes(_line(GOOD))
    elif kind == "dir":
        p = tmp_path / "d.jsonl"
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    r = validate_file(p)
    assert isinstance(r, ValidationReport)
    assert not r.ok and r.file_error == code and r.file_error_message and not r.examples
    assert code in r.summary() and json.dumps(r.to_dict())


def test_records_normalize_each_format():
    assert normalize_record({"prompt": "p", "completion": "c", "metadata": {"k": 1}}) == {
        "messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}], "metadata": {"k": 1}}
    assert normalize_record({"instruction": "i", "input": "x", "output": "o", "system": "s"})["messages"] == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "i\n\nx"},
        {"role": "assistant", "content": "o"}]
    assert normalize_record({"instruction": "i", "input": "", "output": "o"})["messages"][0]["content"] == "i"
    assert normalize_record({"text": "t"}) == {"text": "t", "metadata": {}}
    conv = normalize_record({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                             "completion": [{"role": "assistant", "content": "a"}]})
    assert [m["role"] for m in conv["messages"]] == ["system", "user", "assistant"]
    multi = {"messages": [{"role": "user", "content": "1", "name": "x"}, {"role": "assistant", "content": "2"},
                          {"role": "user", "content": "3"}, {"role": "assistant", "content": "4"}]}
    assert normalize_record(multi)["messages"][0] == {"role": "user", "content": "1"}
    with pytest.raises(RecordError) as ei:
        normalize_record({"prompt": "p", "completion": "c"}, format="alpaca")
    assert ei.value.reason == "format_mismatch"
    with pytest.raises(RecordError) as ei:
        normalize_record({"prompt": [{"role": "user", "content": "u"}], "completion": [{"role": "tool", "content": "a"}]})
    assert (ei.value.field, ei.value.reason) == ("completion[0].role", "unknown_role")
