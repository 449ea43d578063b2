"""Profile registry, the DataProfile contract (plain profile) and answer normalization."""
from __future__ import annotations

import copy
import subprocess
import sys
from datetime import datetime

import pytest

from trainer.profiles import (DataProfile, available_profiles, get_profile, profile_class,
                              register_profile)
from trainer.profiles.base import to_messages

CHAT = {"messages": [{"role": "system", "content": "old system"},
                     {"role": "user", "content": "Hi {date}", "name": "u1"},
                     {"role": "assistant", "content": "Hello."}],
        "metadata": {"source": "t", "tags": ["a"]}}


# ------------------------------------------------------------------ registry
def test_registry_lists_builtins_and_rejects_unknown_names():
    assert available_profiles() == ["emoji_think", "plain", "regime3"]
    assert type(get_profile("plain")).__name__ == "PlainProfile"
    with pytest.raises(ValueError) as e:
        get_profile("emoji-think")
    msg = str(e.value)
    assert "emoji-think" in msg and "emoji_think, plain, regime3" in msg and "did you mean 'emoji_think'" in msg
    with pytest.raises(ValueError, match="did you mean 'regime3'"):
        get_profile("regime4")
    with pytest.raises(ValueError, match="available: emoji_think, plain, regime3"):
        profile_class("qqqqqq")


def test_register_profile_rules():
    with pytest.raises(TypeError):
        register_profile(dict)

    class Dup(DataProfile):
        name = "plain"
    with pytest.raises(ValueError, match="already registered"):
        register_profile(Dup)

    class BadName(DataProfile):
        name = "Bad Name"
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_profile(BadName)
    assert available_profiles() == ["emoji_think", "plain", "regime3"]


def test_config_loader_validates_profile_name_against_registry():
    from trainer.config.loader import ConfigError, validate_dict
    assert validate_dict({"profile": {"name": "regime3"}}).profile.name == "regime3"
    with pytest.raises(ConfigError, match="did you mean 'regime3'"):
        validate_dict({"profile": {"name": "regime_3"}})


def test_importing_profiles_does_not_import_torch():
    code = ("import sys; import trainer.profiles as p; p.get_profile('emoji_think', {'seed': 1}); "
            "p.get_profile('regime3'); print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ options
def test_options_are_checked():
    with pytest.raises(ValueError, match=r"unknown option 'x'.*none \(this profile takes no options\)"):
        get_profile("plain", {"x": 1})
    with pytest.raises(ValueError) as e:
        get_profile("emoji_think", {"think_penality": 1})
    assert "unknown option 'think_penality'" in str(e.value) and "did you mean 'think_penalty'" in str(e.value)
    assert "eos_reward" in str(e.value) and "seed" in str(e.value)
    with pytest.raises(ValueError, match="option 'think_penalty' must be float"):
        get_profile("emoji_think", {"think_penalty": "high"})
    with pytest.raises(ValueError, match="option 'seed' must be int"):
        get_profile("emoji_think", {"seed": True})
    with pytest.raises(ValueError, match="think_penalty_schedule\\[0\\].multiplier"):
        get_profile("emoji_think", {"think_penalty_schedule": [{"steps": 2, "multiplier": -3}]})
    with pytest.raises(ValueError, match="eos_reward"):
        get_profile("regime3", {"eos_reward": -1})
    with pytest.raises(ValueError, match="options must be an object"):
        get_profile("plain", [1])
    p = get_profile("emoji_think", {"think_penalty": 3})
    assert p.options["think_penalty"] == 3.0 and isinstance(p.options["think_penalty"], float)
    opts = {"think_penalty_schedule": [{"steps": 1, "multiplier": 2.0}]}
    p = get_profile("emoji_think", opts)
    p.options["think_penalty_schedule"][0]["steps"] = 9
    assert opts["think_penalty_schedule"][0]["steps"] == 1, "options are copied"
    assert get_profile("emoji_think").options["think_penalty_schedule"][0]["steps"] == 4, "defaults are copied"


# ------------------------------------------------------------------ system prompt
def test_render_system_prompt():
    now = datetime(2024, 3, 5, 23, 59)
    p = get_profile("plain")
    assert p.render_system_prompt("Today is {date}. {keep} braces", now) == "Today is 2024-03-05. {keep} braces"
    assert p.render_system_prompt(None, now) == "" and p.render_system_prompt("", now) == ""
    e = get_profile("emoji_think")
    assert e.render_system_prompt(None, now) == "You are a helpful assistant. Today's date is 2024-03-05."
    assert e.render_system_prompt("", now) == e.render_system_prompt(None, now)
    assert datetime.now().strftime("%Y-%m-%d") in e.render_system_prompt()
    assert "2024-03-05" in get_profile("regime3").render_system_prompt(now=now)


# ------------------------------------------------------------------ plain transform
def test_plain_transform_returns_new_normalized_record():
    p = get_profile("plain")
    src = copy.deepcopy(CHAT)
    out = p.transform_example(src, 0)
    assert src == CHAT, "input must not be mutated"
    assert out == {"messages": CHAT["messages"], "metadata": CHAT["metadata"]}
    out["messages"][1]["content"] = "changed"
    out["metadata"]["tags"].append("b")
    assert src == CHAT, "output must not share objects with the input"
    assert p.transform_example(src, 5) == p.transform_example(src, 5)


def test_system_prompt_inserted_or_overridden():
    p = get_profile("plain")
    out = p.transform_example(CHAT, 0, "NEW")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant"]
    assert out["messages"][0] == {"role": "system", "content": "NEW"}
    no_sys = {"messages": CHAT["messages"][1:]}
    out = p.transform_example(no_sys, 0, "NEW")
    assert out["messages"][0] == {"role": "system", "content": "NEW"} and len(out["messages"]) == 3
    assert out["metadata"] == {}
    assert p.transform_example(no_sys, 0, "")["messages"] == CHAT["messages"][1:]
    assert p.transform_example(CHAT, 0, None)["messages"][0]["content"] == "old system"
    # the prompt is used verbatim: {date} is rendered by render_system_prompt, not here
    assert p.transform_example(no_sys, 0, "d={date}")["messages"][0]["content"] == "d={date}"


def test_other_record_shapes_are_converted():
    assert to_messages({"prompt": "p", "completion": "c"})[0] == [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]
    assert to_messages({"instruction": "do", "input": "this", "output": "ok"})[0][0]["content"] == "do\n\nthis"
    assert to_messages({"instruction": "do", "input": "", "output": "ok"})[0][0]["content"] == "do"
    assert to_messages({"text": "raw", "metadata": {"k": 1}}) == ([{"role": "assistant", "content": "raw"}], {"k": 1})
    out = get_profile("plain").transform_example({"prompt": "p", "completion": "c", "metadata": {"m": 1}}, 3, "S")
    assert out == {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "p"},
                                {"role": "assistant", "content": "c"}], "metadata": {"m": 1}}


@pytest.mark.parametrize("record, problem", [
    ({"messages": []}, "'messages' is empty"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role is 'bot'; allowed: system, user, assistant"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content must be a string"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant message"),
    ({"messages": "hi"}, "'messages' must be a list"),
    ({"question": "q"}, "keys present: question"),
    ({"messages": [{"role": "assistant", "content": "a"}], "metadata": "x"}, "'metadata' must be an object"),
    ([1], "a record must be a JSON object"),
])
def test_validate_example_names_the_problem(record, problem):
    p = get_profile("plain")
    problems = p.validate_example(record)
    assert any(problem in x for x in problems), problems
    with pytest.raises(ValueError, match="plain: example 4 cannot be used"):
        p.transform_example(record, 4)
    assert p.validate_example(CHAT) == []


def test_plain_generation_side():
    p = get_profile("plain")
    msgs = [{"role": "user", "content": "q"}]
    out = p.prepare_messages(msgs, 3, "S")
    assert out == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]
    assert msgs == [{"role": "user", "content": "q"}]
    assert p.prepare_messages(msgs) == msgs and p.prepare_messages(msgs) is not msgs
    with pytest.raises(ValueError, match="role"):
        p.prepare_messages([{"role": "robot", "content": "x"}])
    assert p.stop_sequences == [] and p.postprocess("anything 🛑🛑 goes") == "anything 🛑🛑 goes"
    assert len(p.build_logits_processors(None)) == 0


def test_base_postprocess_cuts_at_earliest_stop_sequence():
    p = get_profile("plain")
    p.stop_sequences = ["END", "##"]
    assert p.postprocess("abc ## def END ghi") == "abc "
    assert p.postprocess("abc END ## x") == "abc "
    assert type(p).stop_sequences == [], "instance stop sequences are a copy"


# ------------------------------------------------------------------ answers
@pytest.mark.parametrize("text, answer, normalized", [
    ("Answer: valid", "valid", "valid"),
    ("Premise check...\nAnswer: Invalid.", "Invalid.", "invalid"),
    ("**Answer:** VALID", "VALID", "valid"),
    ("Let me see.\nThe argument is not valid.", "The argument is not valid.", "invalid"),
    ("Therefore, all cats are mammals.", "Therefore, all cats are mammals.", "all cats are mammals"),
    ("First line\n\n  Some   birds are  NOT fish!  \n", "Some   birds are  NOT fish!", "some birds are not fish"),
    ("", None, None),
    ("   \n  ", None, None),
])
def test_extract_and_normalize_answer(text, answer, normalized):
    p = get_profile("plain")
    assert p.extract_answer(text) == answer
    if answer is not None:
        assert p.normalize_answer(answer) == normalized
    assert p.normalize_answer("all cats are mammals") == "all cats are mammals"


def test_normalize_answer_equivalences():
    p = get_profile("plain")
    same = ["valid", "Valid.", "  VALID ", "The syllogism is valid", "it is valid!", "'valid'", "*valid*"]
    assert {p.normalize_answer(x) for x in same} == {"valid"}
    assert {p.normalize_answer(x) for x in ["invalid", "Not valid.", "This is invalid"]} == {"invalid"}
    assert p.normalize_answer("No cats are dogs.") == p.normalize_answer("so, no  cats are DOGS")
    assert p.normalize_answer("valid but weak") == "valid but weak"
