"""Syllo puzzles: answers checked independently of the generator's solver, difficulty knobs,
rendering per profile, the batch CLI, the fixed suite and its leak guard.

Independent checks (nothing below imports the generator's decision procedure):

* brute force: every set model over a universe of m individuals is enumerated with numpy (each
  term a subset; 2^(k*m) models). It is complete when m >= the number of existential statements
  among premises + negated conclusion, because universal statements stay true in sub-models and
  each existential needs one witness (individuals in no term are allowed, so smaller universes are
  included). Used for every puzzle small enough (k*m <= 16).
* certificates for the rest: a claimed countermodel is evaluated with plain Python sets, and a
  claimed proof is checked step by step against this file's own rule table, each rule of which is
  itself proved sound here by brute force.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from syllo.generator import allocate, generate_batch, parse_mix, MixError
from syllo.puzzles import LEVELS, PHRASES
from syllo.suite import (CURRENT_SUITE_VERSION, MANIFEST, REPO_SUITE_DIR, build_suite, contains_validation_items,
                         file_contains_validation_items, load_suite, read_manifest, sha256_file, suite_dir_for,
                         validation_fingerprints, verify_suite, SuiteError)

REPO = Path(__file__).resolve().parents[1]
QS = ("all", "no", "some", "some_not")
NEG = {"all": "some_not", "some_not": "all", "no": "some", "some": "no"}


# ------------------------------------------------------------------ independent semantics
def holds(stmt, model) -> bool:
    q, s, p = stmt
    S, P = set(model.get(s, ())), set(model.get(p, ()))
    return {"all": S <= P, "no": not (S & P), "some": bool(S & P), "some_not": bool(S - P)}[q]


def brute_valid(premises, conclusion) -> bool | None:
    """True/False by exhaustive enumeration; None when too large to enumerate completely."""
    terms = sorted({t for st in [*premises, conclusion] for t in st[1:]})
    k = len(terms)
    m = max(1, sum(1 for st in premises if st[0] in ("some", "some_not")) + (conclusion[0] in ("all", "no")))
    if k * m > 16:
        return None
    models = np.arange(1 << (k * m), dtype=np.int64)
    full = (1 << m) - 1
    sets = {t: (models >> (i * m)) & full for i, t in enumerate(terms)}

    def truth(st):
        q, s, p = st
        both, only = sets[s] & sets[p], sets[s] & (full ^ sets[p])
        return {"all": only == 0, "no": both == 0, "some": both != 0, "some_not": only != 0}[q]

    ok = np.ones(len(models), dtype=bool)
    for st in premises:
        ok &= truth(st)
    return not bool(np.any(ok & ~truth(conclusion)))


TEST_RULES = {  # name -> (premise patterns, conclusion pattern), variables a b c
    "barbara": ([("all", "a", "b"), ("all", "b", "c")], ("all", "a", "c")),
    "celarent": ([("all", "a", "b"), ("no", "b", "c")], ("no", "a", "c")),
    "darii": ([("some", "a", "b"), ("all", "b", "c")], ("some", "a", "c")),
    "ferio": ([("some", "a", "b"), ("no", "b", "c")], ("some_not", "a", "c")),
    "baroco": ([("some_not", "a", "b"), ("all", "c", "b")], ("some_not", "a", "c")),
    "bocardo": ([("some_not", "b", "c"), ("all", "b", "a")], ("some_not", "a", "c")),
    "convert_no": ([("no", "a", "b")], ("no", "b", "a")),
    "convert_some": ([("some", "a", "b")], ("some", "b", "a")),
}


def test_every_rule_is_sound_by_brute_force():
    for name, (prem, concl) in TEST_RULES.items():
        assert brute_valid(prem, concl) is True, name
    # and the checker can say no: classic fallacies are invalid
    assert brute_valid([("all", "a", "b"), ("all", "c", "b")], ("all", "a", "c")) is False  # undistributed middle
    assert brute_valid([("all", "a", "b"), ("all", "b", "c")], ("some", "a", "c")) is False  # existential import
    assert brute_valid([("no", "a", "b"), ("no", "b", "c")], ("no", "a", "c")) is False


def check_proof(proof, premises, goal) -> None:
    assert proof and tuple(proof[-1]["stmt"]) == tuple(goal), "proof does not end in the goal"
    prem = {tuple(p) for p in premises}
    for i, step in enumerate(proof):
        st = tuple(step["stmt"])
        if step["rule"] == "premise":
            assert st in prem, f"step {i}: {st} is not a premise"
            continue
        assert step["rule"] in TEST_RULES, f"step {i}: unknown rule {step['rule']}"
        pats, concl = TEST_RULES[step["rule"]]
        uses = step["uses"]
        assert len(uses) == len(pats) and all(0 <= u < i for u in uses), f"step {i}: bad uses {uses}"
        env: dict[str, str] = {}
        for pat, u in zip(pats, uses):
            used = tuple(proof[u]["stmt"])
            assert used[0] == pat[0], f"step {i}: {used} does not match {pat}"
            for var, val in zip(pat[1:], used[1:]):
                assert env.setdefault(var, val) == val, f"step {i}: inconsistent binding"
        assert (concl[0], env[concl[1]], env[concl[2]]) == st, f"step {i}: wrong conclusion {st}"


def check_countermodel(model, premises, conclusion) -> None:
    assert all(holds(tuple(p), model) for p in premises), "countermodel violates a premise"
    assert not holds(tuple(conclusion), model), "conclusion holds in the countermodel"


def verify_puzzle(meta) -> str:
    """Independently confirm a record's answer; returns how ('brute' or 'certificate')."""
    premises = [tuple(p) for p in meta["premises"]]
    cert = meta["certificate"]
    how = "certificate"
    if meta["kind"] == "judge":
        concl = tuple(meta["conclusion"])
        b = brute_valid(premises, concl)
        if b is not None:
            assert b == meta["valid"] == (meta["answer"] == "valid"), meta["id"]
            how = "brute"
        if meta["valid"]:
            check_proof(cert["proof"], premises, concl)
        else:
            check_countermodel(cert["countermodel"], premises, concl)
        return how
    s, p = meta["subject"], meta["predicate"]
    forms = [(q, s, p) for q in QS]
    brute = [brute_valid(premises, f) for f in forms]
    if None not in brute:
        follows = [f for f, v in zip(forms, brute) if v]
        expect = "nothing follows" if not follows else None
        assert len(follows) <= 1, meta["id"]
        if follows:
            q = follows[0][0]
            expect = f"some {s} are not {p}" if q == "some_not" else f"{q} {s} are {p}"
        assert meta["answer"] == expect, (meta["id"], meta["answer"], expect)
        how = "brute"
    answer_form = None
    if meta["answer"] != "nothing follows":
        answer_form = next(f for f in forms if meta["answer"] == (
            f"some {s} are not {p}" if f[0] == "some_not" else f"{f[0]} {s} are {p}"))
        check_proof(cert["proof"], premises, answer_form)
    for f in forms:
        if f != answer_form:
            check_countermodel(cert["countermodels"][f[0]], premises, f)
    return how


# ------------------------------------------------------------------ answers
def test_answers_verified_independently_on_thousands_of_puzzles():
    recs = generate_batch(2400, "easy:0.3,medium:0.3,hard:0.2,expert:0.2", seed=11)
    how = Counter()
    outcomes = Counter()
    for r in recs:
        meta = r["metadata"]
        how[(meta["difficulty"], verify_puzzle(meta))] += 1
        outcomes[(meta["kind"], meta["answer"] if meta["kind"] == "judge" else meta["answer"] == "nothing follows")] += 1
    # negatives are covered in quantity: invalid judges and "nothing follows" derives
    assert outcomes[("judge", "invalid")] > 700 and outcomes[("judge", "valid")] > 700
    assert outcomes[("derive", True)] > 50 and outcomes[("derive", False)] > 50
    # the brute force covers every easy and most medium puzzles, and some of the larger ones
    assert how[("easy", "brute")] == 720
    assert how[("medium", "brute")] > 500
    assert how[("hard", "brute")] + how[("expert", "brute")] > 50


def test_verifier_catches_a_wrong_answer():
    rec = generate_batch(1, "easy", seed=3)[0]
    meta = json.loads(json.dumps(rec["metadata"]))
    meta["valid"] = not meta["valid"]
    meta["answer"] = "valid" if meta["valid"] else "invalid"
    with pytest.raises(AssertionError):
        verify_puzzle(meta)


# ------------------------------------------------------------------ difficulty knobs
def _line_premises(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln[:1].isdigit() and ". " in ln]


def test_difficulty_levels_produce_what_they_claim():
    stats = {}
    for level in ("easy", "medium", "hard", "expert"):
        lv = LEVELS[level]
        recs = generate_batch(300, level, seed=5)
        chain, prem, kinds, valid, converted, para = [], [], Counter(), 0, 0, 0
        for r in recs:
            m = r["metadata"]
            text = r["messages"][0]["content"]
            lines = _line_premises(text)
            assert m["difficulty"] == level
            assert lv.chain[0] <= m["chain_length"] <= lv.chain[1]
            assert lv.distractors[0] <= m["n_distractors"] <= lv.distractors[1]
            assert len(lines) == m["n_premises"] == m["chain_length"] + m["n_distractors"]
            assert len(m["chain_indices"]) == m["chain_length"]
            assert sorted(m["chain_indices"] + m["distractor_indices"]) == list(range(m["n_premises"]))
            # distractors are irrelevant: the chain premises alone give the same answer
            chain_only = dict(m, premises=[m["premises"][i] for i in m["chain_indices"]])
            if m["kind"] == "judge":
                b = brute_valid([tuple(x) for x in chain_only["premises"]], tuple(m["conclusion"]))
                if b is not None:
                    assert b == m["valid"]
            # phrasing claims match the text
            for ln, st, v in zip(lines, m["premises"], m["phrasing"]):
                body = ln.split(". ", 1)[1].rstrip(".")
                assert body == PHRASES[st[0]][v].format(s=st[1], p=st[2])
            if not lv.shuffle:
                assert m["chain_indices"] == list(range(m["chain_length"]))
            for i in m["converted_indices"]:
                assert m["premises"][i][0] in ("no", "some")
            chain.append(m["chain_length"])
            prem.append(m["n_premises"])
            kinds[m["kind"]] += 1
            valid += m["valid"]
            converted += bool(m["converted_indices"])
            para += m["paraphrased"]
        if lv.convert_p == 0:
            assert converted == 0
        if lv.paraphrase_p == 0:
            assert para == 0
        else:
            assert para > 0
        if lv.derive_p == 0:
            assert kinds["derive"] == 0
        else:
            assert 0.5 * lv.derive_p < kinds["derive"] / 300 < 1.5 * lv.derive_p
        assert 0.35 < valid / 300 < 0.65
        stats[level] = (sum(chain) / 300, sum(prem) / 300)
    means = [stats[lv] for lv in ("easy", "medium", "hard", "expert")]
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(means, means[1:])), means


# ------------------------------------------------------------------ rendering, CLI
def test_profiles_render_what_the_profiles_accept():
    from trainer.profiles import get_profile
    recs = {p: generate_batch(40, "hard:0.5,expert:0.5", seed=2, profile=p) for p in ("plain", "emoji_think", "regime3")}
    r3, emo = get_profile("regime3"), get_profile("emoji_think")
    for i, rec in enumerate(recs["regime3"]):
        assert r3.transform_example(rec, i, None)["messages"] == rec["messages"]  # parses, already canonical
        got = r3.normalize_answer(r3.extract_answer(rec["messages"][1]["content"]))
        assert got == rec["metadata"]["expected"] and got.startswith("(")
    for i, rec in enumerate(recs["emoji_think"]):
        framed = emo.transform_example(rec, i, None)  # what the engine trains on
        assert framed["messages"] != rec["messages"]  # the task package renders; the profile frames
        assert emo.transform_example(framed, i, None)["messages"] == framed["messages"]  # idempotent
        assert emo.normalize_answer(emo.extract_answer(framed["messages"][1]["content"])) == rec["metadata"]["answer"]
    for a, b in zip(recs["plain"], recs["regime3"]):
        assert a["metadata"]["id"] == b["metadata"]["id"]  # same puzzles, different rendering


def test_mix_parsing_and_allocation():
    assert parse_mix("easy:0.3,medium:0.5,hard:0.2") == pytest.approx({"easy": 0.3, "medium": 0.5, "hard": 0.2})
    assert parse_mix("hard") == {"hard": 1.0}
    assert allocate(1000, parse_mix("easy:0.3,medium:0.5,hard:0.2")) == {"easy": 300, "medium": 500, "hard": 200}
    assert sum(allocate(7, parse_mix("easy:1,medium:1,hard:1")).values()) == 7
    for bad, msg in (("easy:x", "not a number"), ("legendary", "unknown level"), ("easy:0", "no positive")):
        with pytest.raises(MixError, match=msg):
            parse_mix(bad)


def test_cli_is_deterministic_atomic_and_exact(tmp_path):
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cmd = [sys.executable, str(REPO / "tools/data/generate_syllo_batch.py"), "--count", "50",
           "--difficulty", "easy:0.3,medium:0.5,hard:0.2", "--seed", "9", "--profile", "plain", "--no-progress"]
    for out in (out1, out2):
        r = subprocess.run(cmd + ["--output", str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert out1.read_bytes() == out2.read_bytes()
    recs = [json.loads(x) for x in out1.read_text().splitlines()]
    assert Counter(r["metadata"]["difficulty"] for r in recs) == {"easy": 15, "medium": 25, "hard": 10}
    assert all({"difficulty", "answer", "pattern"} <= set(r["metadata"]) for r in recs)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    bad = subprocess.run(cmd[:2] + ["--difficulty", "easy:nope", "--output", str(tmp_path / "c.jsonl")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--difficulty" in bad.stderr and "nope" in bad.stderr
    assert not (tmp_path / "c.jsonl").exists()


# ------------------------------------------------------------------ the fixed suite
def test_committed_suite_matches_manifest_and_its_seed(tmp_path):
    manifest = verify_suite(REPO_SUITE_DIR)
    assert manifest["n_items"] == sum(manifest["counts"].values()) and 150 <= manifest["n_items"] <= 300
    rebuilt = build_suite(tmp_path, seed=manifest["seed"], counts=manifest["counts"], version=manifest["version"])
    for name, info in manifest["files"].items():
        assert rebuilt["files"][name]["sha256"] == info["sha256"] == sha256_file(REPO_SUITE_DIR / name)
    suite = load_suite(REPO_SUITE_DIR)
    assert suite.version == CURRENT_SUITE_VERSION == "syllo-v2" and len(suite.items) == manifest["n_items"]
    assert Counter(it.difficulty for it in suite.items) == manifest["counts"]
    for it in suite.items:
        verify_puzzle(it.meta)
    sub = load_suite(REPO_SUITE_DIR, max_items=40)
    assert Counter(it.difficulty for it in sub.items) == {"easy": 10, "medium": 10, "hard": 10, "expert": 10}
    # the previous version stays readable (and verified) in its own folder
    v1 = load_suite(suite_dir_for("syllo-v1"))
    assert v1.version == "syllo-v1" and v1.dir == REPO_SUITE_DIR / "v1" and len(v1.items) == 200
    assert suite_dir_for("v2") == REPO_SUITE_DIR
    with pytest.raises(SuiteError, match="known: v2, v1"):
        suite_dir_for("v9")


def test_a_modified_suite_is_refused(tmp_path):
    build_suite(tmp_path, counts={"easy": 4})
    name = next(iter(read_manifest(tmp_path)["files"]))
    data = (tmp_path / name).read_text().replace('"valid"}', '"invalid"}', 1)
    (tmp_path / name).write_text(data)
    with pytest.raises(SuiteError, match=name):
        load_suite(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(SuiteError, match="no manifest"):
        load_suite(tmp_path)


def test_validation_items_are_detected_in_training_data(tmp_path):
    from trainer.profiles import get_profile
    fps = validation_fingerprints(REPO_SUITE_DIR)
    suite = load_suite(REPO_SUITE_DIR)
    recs = [it.record for it in suite.items]
    assert contains_validation_items(recs, fps) == list(range(len(recs)))
    # survives another profile's framing, a system prompt, premise re-ordering and other input formats
    emo = get_profile("emoji_think")
    framed = [emo.transform_example(r, i + 7, "You are terse.") for i, r in enumerate(recs[:20])]
    assert contains_validation_items(framed, fps) == list(range(20))
    pz_meta = recs[150]["metadata"]
    lines = recs[150]["messages"][0]["content"].splitlines()
    prem = [ln for ln in lines if ln[:1].isdigit()]
    shuffled = "\n".join(["Premises:"] + [f"{i}. {ln.split('. ', 1)[1]}" for i, ln in enumerate(reversed(prem), 1)]
                         + [ln for ln in lines if ln.startswith("Question")])
    alpaca = {"instruction": shuffled, "output": pz_meta["answer"]}
    fresh = generate_batch(30, "easy:0.5,expert:0.5", seed=77, exclude=fps)
    mixed = fresh[:10] + [alpaca] + fresh[10:] + [json.dumps(recs[3])]
    assert contains_validation_items(mixed, fps) == [10, 31]
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in fresh) + json.dumps(recs[0]) + "\n")
    assert file_contains_validation_items(p, fps) == [31]
    assert contains_validation_items(fresh, set()) == []


def test_generator_never_emits_a_validation_item(tmp_path):
    """A validation folder holding the first items of a batch: the same batch with exclusion
    re-draws exactly those (without exclusion it would reproduce them)."""
    first = generate_batch(40, "easy:0.5,medium:0.5", seed=123)
    vdir = tmp_path / "validation"
    vdir.mkdir()
    (vdir / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first[:25]))
    fps = validation_fingerprints(vdir)
    again = generate_batch(40, "easy:0.5,medium:0.5", seed=123, exclude=fps)
    assert contains_validation_items(first, fps) == list(range(25))
    assert contains_validation_items(again, fps) == []
    assert [r["metadata"]["id"] for r in again[25:]] == [r["metadata"]["id"] for r in first[25:]]
    assert len({r["metadata"]["id"] for r in generate_batch(600, "easy", seed=0)}) == 600  # no duplicates


# ------------------------------------------------------------------ reasoning, not wording
def test_wording_alone_predicts_nothing_on_the_suite_and_on_batches():
    """The majority answer per question template (terms blanked), fitted on the very items it is
    scored on, must not beat chance + 5 points per difficulty; v1 shows the check can fail."""
    from syllo.analysis import wording_only_scores
    suite = [it.record for it in load_suite(REPO_SUITE_DIR).items]
    sets = {"suite v2": suite,
            "batch": generate_batch(800, "easy:0.25,medium:0.25,hard:0.25,expert:0.25", seed=41),
            "odd batch": generate_batch(301, "easy:0.4,medium:0.3,hard:0.2,expert:0.1", seed=42, profile="regime3")}
    for name, recs in sets.items():
        scores = wording_only_scores(recs)
        assert set(scores) == {"easy", "medium", "hard", "expert", "all"}, name
        for level, sc in scores.items():
            assert sc["accuracy"] <= sc["chance"] + 0.05, (name, level, sc)
    assert read_manifest(REPO_SUITE_DIR)["wording_only_accuracy"]["all"] == 0.5
    v1 = wording_only_scores([it.record for it in load_suite(suite_dir_for("v1")).items])
    assert max(sc["accuracy"] for sc in v1.values()) > 0.6  # the old suite's wording did give answers away
    # balance is per template, not only per level: every judge template and the derive one occur
    templates = Counter(r["metadata"]["template"] for r in sets["batch"])
    assert "Does it follow that some X are not Y?" in templates and "Does it follow that not all X are Y?" in templates
    assert "What follows with X as subject and Y as predicate?" in templates


def test_the_logic_reading_is_stated_where_contradiction_like_premises_appear():
    from trainer.profiles import get_profile
    from syllo.puzzles import READING_NOTE
    assert "does not imply that any X exist" in READING_NOTE and "there are no X" in READING_NOTE
    emo = get_profile("emoji_think")
    seen_pairs = 0
    for profile in ("plain", "emoji_think", "regime3"):
        for i, rec in enumerate(generate_batch(300, "hard:0.5,expert:0.5", seed=8, profile=profile)):
            text = rec["messages"][0]["content"]
            if profile == "emoji_think":
                text = emo.transform_example(rec, i, None)["messages"][0]["content"]
            assert READING_NOTE in text
            prem = {tuple(x) for x in rec["metadata"]["premises"]}
            # "All A are B" next to "No A are B" (or the some/some_not converse) reads as a
            # contradiction to a person; the note in the same prompt says what it means
            seen_pairs += any(("no", s, p) in prem or ("no", p, s) in prem for q, s, p in prem if q == "all")
    assert seen_pairs > 0  # such distractors do occur, and each one came with the note


def test_items_derive_from_seed_difficulty_index_and_the_record_prevents_repeats(tmp_path):
    from syllo.batch import fingerprints_of_records
    from syllo.fingerprint_record import FingerprintRecord
    easy_only = generate_batch(30, "easy", seed=5)
    mixed = generate_batch(60, "easy:0.5,hard:0.5", seed=5)
    ids = lambda recs: {r["metadata"]["id"] for r in recs if r["metadata"]["difficulty"] == "easy"}  # noqa: E731
    assert ids(easy_only) == ids(mixed)  # item j of the easy stream is the same whatever the mix
    record = FingerprintRecord(tmp_path / "generated" / ".fingerprints")
    assert record.add(fingerprints_of_records(easy_only)) == 30 and record.add(fingerprints_of_records(easy_only)) == 0
    again = generate_batch(60, "easy:0.5,hard:0.5", seed=5, exclude=record.load())
    assert not fingerprints_of_records(again) & record.load()
    assert Counter(r["metadata"]["answer"] for r in again if r["metadata"]["difficulty"] == "easy") == \
        {"valid": 15, "invalid": 15}  # re-drawn for the same targets: still balanced
    # a torn last line (a writer killed mid-append) is ignored, and the next append starts a new line
    with open(record.path, "a") as f:
        f.write("k:0123")
    assert len(record.load()) == 30
    assert record.add(fingerprints_of_records(again)) == 60 and len(record.load()) == 90


def test_pattern_filter_generates_more_of_a_pattern():
    recs = generate_batch(12, "hard", seed=3, patterns={"pattern": ["two_negatives", "too_strong"]})
    assert {r["metadata"]["pattern"] for r in recs} <= {"two_negatives", "too_strong"} and len(recs) == 12
    tpl = "Does it follow that some X are not Y?"
    recs = generate_batch(10, "medium", seed=3, patterns={"template": tpl, "n_premises": 3})
    assert all(r["metadata"]["template"] == tpl and r["metadata"]["n_premises"] == 3 for r in recs)
    assert Counter(r["metadata"]["answer"] for r in recs) == {"valid": 5, "invalid": 5}
    recs = generate_batch(6, "expert", seed=3, patterns=lambda m: m["kind"] == "derive")
    assert all(r["metadata"]["kind"] == "derive" for r in recs)
    with pytest.raises(ValueError, match="difficulties with the mix"):
        generate_batch(2, "easy", patterns={"difficulty": "hard"})
    with pytest.raises(RuntimeError, match="no puzzle matching the pattern filter"):
        generate_batch(1, "easy", patterns={"pattern": "no_such_pattern"}, max_attempts=60)
