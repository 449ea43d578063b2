"""regime3: s-expression grammar, canonical form, wrapping, rejection, answer extraction."""
from __future__ import annotations

import copy

import pytest

from trainer.profiles import get_profile
from trainer.profiles.regime3 import ANS_END, ANS_START, SExprError, canonicalize


def ex(answer, q="Compute it."):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize("text, canon", [
    ("(add 1 2)", "(add 1 2)"),
    ("  ( ADD   1\n\t2 )  ", "(add 1 2)"),
    ("(Mul (add 1 2) (SUB x Y))", "(mul (add 1 2) (sub x y))"),
    ("(max +007 -0 2.50 2.0 1e3 .5 -1.25E1)", "(max 7 0 2.5 2 1000 0.5 -12.5)"),
    ("(+ a b)", "(+ a b)"),
    ("(>= x1 all_cats)", "(>= x1 all_cats)"),
    ('(concat "Hello  World" "say \\"hi\\"" x)', '(concat "Hello  World" "say \\"hi\\"" x)'),
    ("(not (and p q))", "(not (and p q))"),
    ("(all cats mammals)", "(all cats mammals)"),
])
def test_canonical_form(text, canon):
    assert canonicalize(text) == canon
    assert canonicalize(canon) == canon  # a fixed point


@pytest.mark.parametrize("text, reason", [
    ("", "empty answer"),
    ("   ", "empty answer"),
    ("x", "must be a list form"),
    ("42", "must be a list form"),
    ("(add 1 2", "missing ')' for '(' at column 1"),
    ("(add 1 2))", "unexpected text after the expression at column 10"),
    (")", "unexpected ')' at column 1"),
    ("(add 1 2) (sub 3 4)", "unexpected text after the expression"),
    ("()", "empty list '()'"),
    ("(add)", "'(add)' at column 1 needs at least one argument"),
    ("(add (neg) 1)", "'(neg)' at column 6 needs at least one argument"),
    ("(1 2 3)", "operator at column 2 must be a symbol; got '1'"),
    ('("f" 1)', "operator at column 2 must be a symbol"),
    ("((f x) y)", "must be a symbol; got the list '(f x)'"),
    ("(add 1x 2)", "invalid atom '1x' at column 6"),
    ('(f "open)', "unterminated string"),
    ('(f "a\\n")', "bad escape"),
    ("(f <<ANS_START>>)", "looks like a marker"),
    ("(f 1e999)", "too large"),
    ("(a " * 40 + "x" + ")" * 40, "nesting deeper than 32"),
])
def test_rejects_with_reason(text, reason):
    with pytest.raises(SExprError) as e:
        canonicalize(text)
    assert reason in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError)


def test_max_depth_option():
    deep = "(a (b (c x)))"
    assert get_profile("regime3").canonicalize(deep) == deep
    with pytest.raises(SExprError, match="nesting deeper than 2"):
        get_profile("regime3", {"max_depth": 2}).canonicalize(deep)
    with pytest.raises(ValueError, match="max_depth"):
        get_profile("regime3", {"max_depth": 0})


def test_transform_wraps_and_canonicalises():
    p = get_profile("regime3")
    src = ex("( ADD 1   2 )")
    keep = copy.deepcopy(src)
    out = p.transform_example(src, 0, "SYS")
    assert src == keep
    assert out["messages"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Compute it."},
                               {"role": "assistant", "content": "<<ANS_START>> (add 1 2) <<ANS_END>>"}]
    assert out["metadata"] == {"regime3": {"answers": ["(add 1 2)"]}}
    worked = ex("Add first.\n\n<<ANS_START>>(Mul (add 1 2)   3)<<ANS_END>>\n")
    assert p.transform_example(worked, 1)["messages"][1]["content"] == \
        "Add first.\n<<ANS_START>> (mul (add 1 2) 3) <<ANS_END>>"
    assert p.transform_example(out, 0, "SYS") == out, "idempotent"


@pytest.mark.parametrize("answer, reason", [
    ("The answer is 3", "no <<ANS_START>> ... <<ANS_END>> markers and the whole reply is not one expression: "
                        "the answer must be a list form '(op arg ...)', got the bare atom 'The'"),
    ("(add 1 2", "missing ')'"),
    ("<<ANS_START>> (add 1 2 <<ANS_END>>", "does not parse: unbalanced parentheses: missing ')'"),
    ("<<ANS_START>> (add 1 2) <<ANS_END>> and more", "text after <<ANS_END>>"),
    ("<<ANS_START>> (add 1 2)", "<<ANS_START>> without <<ANS_END>>"),
    ("(add 1 2) <<ANS_END>>", "<<ANS_END>> without <<ANS_START>>"),
    ("<<ANS_END>> x <<ANS_START>>", "comes before"),
    ("<<ANS_START>> (a 1) <<ANS_END>> <<ANS_START>> (b 2) <<ANS_END>>", "more than one"),
    ("<<ANS_START>>  <<ANS_END>>", "empty answer"),
])
def test_validate_rejects_unparsable_answers(answer, reason):
    p = get_profile("regime3")
    problems = p.validate_example(ex(answer))
    assert len(problems) == 1 and problems[0].startswith("messages[1] (assistant): answer does not parse: ")
    assert reason in problems[0], problems
    with pytest.raises(ValueError, match="regime3: example 6 cannot be used"):
        p.transform_example(ex(answer), 6)


def test_every_assistant_turn_is_checked():
    p = get_profile("regime3")
    rec = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "(f 1)"},
                        {"role": "user", "content": "b"}, {"role": "assistant", "content": "oops"}]}
    assert p.validate_example(rec) == [
        "messages[3] (assistant): answer does not parse: no <<ANS_START>> ... <<ANS_END>> markers and the "
        "whole reply is not one expression: the answer must be a list form '(op arg ...)', got the bare atom 'oops'"]


def test_generation_side():
    p = get_profile("regime3")
    assert p.stop_sequences == [ANS_END]
    text = "Thinking... <<ANS_START>> ( Add 1 2 ) <<ANS_END>> then rambling <<ANS_START>> (x 1) <<ANS_END>>"
    assert p.postprocess(text) == "Thinking... <<ANS_START>> ( Add 1 2 ) <<ANS_END>>"  # marker kept
    assert p.extract_answer(text) == "(add 1 2)"
    assert p.extract_answer("<<ANS_START>> (f 1) <<ANS_START>> (G 2) <<ANS_END>>") == "(g 2)"
    assert p.extract_answer("<<ANS_START>> (mul 2 3)") == "(mul 2 3)"  # only the end marker missing
    assert p.extract_answer("<<ANS_START>> (mul 2") is None  # cut off
    assert p.extract_answer("(add 1 2)") is None  # no marker
    assert p.extract_answer("<<ANS_START>> banana <<ANS_END>>") is None
    assert p.prepare_messages([{"role": "user", "content": "q"}], 0, "S") == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q"}]
    trained = p.transform_example(ex("(f X)"), 0)["messages"][1]["content"]
    assert p.extract_answer(trained) == "(f x)"


def test_normalize_answer_for_exact_match():
    p = get_profile("regime3")
    forms = ["(ADD 1 2)", "( add 1  2 )", f"{ANS_START} (add 1 2) {ANS_END}", "(add +1 2.0)"]
    assert {p.normalize_answer(x) for x in forms} == {"(add 1 2)"}
    assert p.normalize_answer("(add 2 1)") != "(add 1 2)"  # no algebra: argument order matters
    assert p.normalize_answer("  Valid. ") == "valid"  # not an expression: text normalization


def test_default_system_prompt_mentions_markers():
    sp = get_profile("regime3").render_system_prompt()
    assert ANS_START in sp and ANS_END in sp and "{date}" not in sp
