"""The evaluator generates through the server's batched engine (``trainer.generation``): its
answers must equal one-by-one greedy ``model.generate`` answers, stops and processors included."""
from __future__ import annotations

import pytest

N_ITEMS = 10


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from monitoring.evaluation.scoring import prompt_and_expected, render_for_profile
    from syllo.suite import REPO_SUITE_DIR, load_suite
    from trainer.profiles import get_profile

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    # post-stop penalty + EOS reward: real stateful processors on every row
    profile = get_profile("regime3", {"post_stop_base_penalty": 2.0, "post_stop_growth": 1.0, "eos_reward": 3.0})
    prompts = []
    for item in load_suite(REPO_SUITE_DIR, max_items=N_ITEMS).items:
        msgs, _ = prompt_and_expected(render_for_profile(item, "regime3"))
        gen = profile.prepare_messages(msgs, index=item.index, system_prompt=None)
        prompts.append(tok.apply_chat_template(gen, tokenize=False, add_generation_prompt=True))
    return model, tok, profile, prompts


def test_evaluator_answers_equal_one_by_one_generate(setup):
    from monitoring.evaluation.generate import generate_answers
    from trainer.generation.reference import generate_one

    model, tok, profile, prompts = setup
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    procs = lambda: profile.build_logits_processors(tok)  # noqa: E731
    assert len(procs()) == 2
    # a stop string the untrained model really produces: a piece of its first reply
    first = generate_one(model, tok, ids[0], max_new_tokens=24)["text"]
    words = first.split()
    assert len(words) >= 3, first
    stops = [words[len(words) // 2], *profile.stop_sequences]

    # batch 4 < 10 items: rows finish and waiting items join the running batch
    got = generate_answers(model, tok, prompts, max_new_tokens=24, stop_sequences=stops, make_processors=procs,
                           batch_size=4)
    stopped = 0
    for i, g in enumerate(got):
        ref = generate_one(model, tok, ids[i], max_new_tokens=24, stops=stops, make_processors=procs)
        assert g["tokens"] == ref["tokens"], (i, g["text"], ref["text"])
        assert g["text"] == ref["text"]
        assert g["probs"] == pytest.approx(ref["probs"], abs=1e-4)
        assert g["error"] is None
        stopped += g["finish_reason"] == "stop"
    assert stopped >= 1  # the stop path was exercised, not only max_new_tokens
