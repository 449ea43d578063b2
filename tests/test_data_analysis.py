"""The data analysis on real files with the tiny model's tokenizer: figures against hand-computed
ones, duplicates within a file and against a trained file, syllo balance, errors naming the line,
and the CLI (by path, --json, --plot) as a subprocess."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from foundation.atomic_io import atomic_write_json
from foundation.model_db import ModelDB
from foundation.paths import Paths
from syllo.generator import generate_batch
from tests.conftest import REPO, write_jsonl
from trainer.data.analysis import AnalysisSettings, analyze_paths
from trainer.data.analysis_checks import syllo_template
from trainer.data.near_dupes import NearDupIndex, jaccard, shingles
from trainer.data.tokenization import tokenize_example
from trainer.data.trained_files import load_trained_index

WORDS = ("the quick brown fox jumps over the lazy dog while seven wizards quietly hex a jovial "
         "bureaucrat near forty frozen lakes and twelve old ships sail past the northern lighthouse "
         "under a pale moon as the sleepy harbour cat watches from a stack of wet fishing nets").split()


def chat(user: str, assistant: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": msgs}


LONG = " ".join(WORDS)
NEAR = " ".join(WORDS[:30] + ["purple"] + WORDS[31:])  # one word changed in 50
FIXTURE = [
    chat("hello there", "general kenobi"),                                        # 1
    {"messages": [{"role": "system", "content": "You are terse."},                 # 2: 4 turns + system
                  {"role": "user", "content": "two plus two"}, {"role": "assistant", "content": "four"},
                  {"role": "user", "content": "and three"}, {"role": "assistant", "content": "seven"}]},
    chat("hello there", "general kenobi"),                                        # 3: exact copy of 1
    chat("Summarise: " + LONG, LONG),                                             # 4: over max_length
    chat("Summarise: " + NEAR, NEAR),                                             # 5: near copy of 4
    {"prompt": "ping\x07", "completion": "pong", "metadata": {"id": 6}},          # 6: control char
]
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tiny_model_dir), local_files_only=True)


def hand_length(tok, record: dict) -> int:
    """Tokens of the conversation rendered by the chat template, counted without our code."""
    text = tok.apply_chat_template(record["messages"], tokenize=False)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def nearest_rank(values: list[int], q: int) -> int:
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def normalized(r: dict) -> dict:
    if "prompt" in r:
        return chat(r["prompt"], r["completion"])
    return r


def test_figures_match_hand_computed(tmp_path, tok):
    path = write_jsonl(tmp_path / "small.jsonl", FIXTURE)
    rep = analyze_paths([path], tok, AnalysisSettings(max_length=MAX_LENGTH), progress=False)
    r = rep["files"][0]
    assert r["ok"] and r["n_errors"] == 0
    assert (r["lines"], r["examples"]) == (6, 6)
    assert r["formats"] == {"messages": 5, "prompt_completion": 1}
    assert r["turns"]["per_example"] == {"2": 5, "4": 1}
    assert r["roles"] == {"system": 1, "user": 7, "assistant": 7}
    assert r["system_prompts"]["distinct"] == 1 and r["system_prompts"]["examples_without"] == 5
    assert r["system_prompts"]["top"] == [{"text": "You are terse.", "count": 1}]

    # token figures: the exact copy (line 3) is dropped before tokenizing, as in training
    trained = [normalized(FIXTURE[i]) for i in (0, 1, 3, 4, 5)]
    lengths = [hand_length(tok, rec) for rec in trained]
    t = r["tokens"]
    assert t["tokenized"] == 5
    ln = t["length"]
    assert (ln["min"], ln["max"]) == (min(lengths), max(lengths))
    for q in (50, 90, 95, 99):
        assert ln[f"p{q}"] == nearest_rank(lengths, q)
    assert ln["mean"] == round(sum(lengths) / len(lengths), 2)
    overlong = [n for n in lengths if n > MAX_LENGTH]
    assert len(overlong) == 2 and t["overlong"] == 2 and t["truncated"] == 2
    assert sum(t["histogram"]["counts"]) + t["histogram"]["overflow"] == 5
    # what the loss sees: the project's own masks, kept tokens after truncation
    masks = [tokenize_example(tok, rec, max_length=MAX_LENGTH) for rec in trained]
    kept = [m for m in masks if m["n_labels"]]
    assert t["trained_examples"] == len(kept)
    assert t["trained_tokens"] == sum(min(n, MAX_LENGTH) for n, m in zip(lengths, masks) if m["n_labels"])
    assert t["assistant_tokens"] == sum(m["n_labels"] for m in kept)
    assert t["assistant_share"] == round(t["assistant_tokens"] / t["trained_tokens"], 4)
    # an untruncated example's labels cover at least its answer's own tokens
    assert masks[0]["n_labels"] >= len(tok("general kenobi", add_special_tokens=False)["input_ids"])

    d = r["duplicates"]
    assert (d["exact_within"], d["near_within"], d["exact_trained"], d["near_trained"]) == (1, 1, 0, 0)
    assert {(x["line"], x["kind"], x["same_as"]) for x in d["examples"]} == {
        (3, "exact_within", "line 1"), (5, "near_within", "line 4")}
    assert r["anomalies"]["counts"] == {"control_char": 1}
    assert r["anomalies"]["examples"][0]["line"] == 6
    assert r["syllo"] is None
    assert rep["total"]["examples"] == 6 and rep["total"]["tokens"]["trained_tokens"] == t["trained_tokens"]


def test_overlong_policies(tmp_path, tok):
    path = write_jsonl(tmp_path / "small.jsonl", FIXTURE)
    drop = analyze_paths([path], tok, AnalysisSettings(max_length=MAX_LENGTH, overlong_policy="drop"),
                         progress=False)["files"][0]["tokens"]
    assert (drop["overlong"], drop["dropped_overlong"], drop["truncated"], drop["trained_examples"]) == (2, 2, 0, 3)
    fail = analyze_paths([path], tok, AnalysisSettings(max_length=MAX_LENGTH, overlong_policy="fail"),
                         progress=False)["files"][0]["tokens"]
    assert fail["rejected_overlong"] == 2 and fail["overlong_consequence"] == "the whole file is rejected"


def test_near_duplicate_estimate_tracks_jaccard():
    a, b = shingles("user: " + LONG), shingles("user: " + NEAR)
    idx = NearDupIndex(threshold=0.8)
    idx.add("a", idx.signature("user: " + LONG))
    hit = idx.query(idx.signature("user: " + NEAR))
    assert hit is not None and hit[0] == "a"
    assert abs(hit[1] - jaccard(a, b)) < 0.15
    assert idx.query(idx.signature("user: something else entirely, nothing shared at all")) is None


def test_duplicates_against_trained_files(base_dir, tok):
    paths = Paths.from_base(base_dir)
    trained = write_jsonl(paths.completed / "old.jsonl", [chat("Summarise: " + LONG, LONG), chat("a", "b")])
    atomic_write_json(paths.completed / "old.result.json", {"job_id": "j1", "original_name": "old_upload.jsonl",
                                                             "file": "old.jsonl", "priority": "normal"})
    db = ModelDB.for_base(base_dir)
    db.record_file(None, "old_upload.jsonl", "j1", "completed", 5, 100, result={})
    db.record_file(None, "gone.jsonl", "j0", "completed", 5, 100, result={})
    db.record_file(None, "bad.jsonl", "j9", "failed", 0, 0, result={})
    new = write_jsonl(base_dir / "inbox" / "new.jsonl", [chat("a", "b"), chat("Summarise: " + NEAR, NEAR),
                                                        chat("fresh", "data")])
    index = load_trained_index(base_dir, exclude=[new])
    assert index.files == ["old.jsonl"] and index.missing == ["gone.jsonl"]
    r = analyze_paths([new], tok, AnalysisSettings(max_length=MAX_LENGTH), trained=index, progress=False)
    d = r["files"][0]["duplicates"]
    assert (d["exact_trained"], d["near_trained"], d["exact_within"], d["near_within"]) == (1, 1, 0, 0)
    assert {(x["line"], x["same_as"]) for x in d["examples"]} == {(1, "old.jsonl:2"), (2, "old.jsonl:1")}
    # a trained file analysed again is not compared with itself
    assert load_trained_index(base_dir, exclude=[trained]).files == []


def test_syllo_mix_and_answer_balance(tmp_path, tok):
    recs = generate_batch(60, "easy:1,medium:1,hard:1", seed=3)
    path = write_jsonl(tmp_path / "syllo.jsonl", recs)
    sy = analyze_paths([path], tok, AnalysisSettings(max_length=512), progress=False)["files"][0]["syllo"]
    assert sy["examples"] == 60
    assert sy["difficulty"] == dict(Counter(r["metadata"]["difficulty"] for r in recs)) == \
        {"easy": 20, "medium": 20, "hard": 20}
    want: dict[str, Counter] = {}
    for r in recs:
        tpl, ans = syllo_template(r["metadata"])
        want.setdefault(tpl, Counter())[ans] += 1
        if r["metadata"]["kind"] == "judge":
            assert ans == r["messages"][1]["content"]  # plain profile: the answer is the assistant turn
    assert {row["template"]: row["answers"] for row in sy["templates"]} == {k: dict(v) for k, v in want.items()}
    guess = sum(c.most_common(1)[0][1] for c in want.values()) / 60
    assert sy["wording_guess_accuracy"] == round(guess, 4)
    assert sy["wording_guess_accuracy"] >= sy["majority_baseline"]
    judge = [r["metadata"] for r in recs if r["metadata"]["kind"] == "judge" and
             r["metadata"]["conclusion"][0] == "no" and r["metadata"]["conclusion_phrasing"] == 0]
    row = next(x for x in sy["templates"] if x["template"] == "Does it follow that no X are Y?")
    assert row["n"] == len(judge)


def _cli(*args: str, base_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINER_BASE_DIR": str(base_dir)}
    return subprocess.run([sys.executable, str(REPO / "tools/data/analyze_training_data.py"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_json_plot_and_errors(base_dir, tmp_path):
    folder = tmp_path / "data"
    write_jsonl(folder / "a.jsonl", FIXTURE)
    write_jsonl(folder / "b.jsonl", generate_batch(12, "easy", seed=1))
    png = tmp_path / "out" / "plot.png"
    p = _cli(str(folder), "--json", "--plot", str(png), "--no-progress", base_dir=base_dir)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert [Path(f["path"]).name for f in rep["files"]] == ["a.jsonl", "b.jsonl"]
    assert rep["total"]["examples"] == 18 and rep["total"]["files"] == 2
    assert rep["settings"]["max_length"] == 128  # from the base dir's config.json
    assert rep["total"]["tokens"]["tokenized"] == 5 + 12
    assert rep["total"]["syllo"]["difficulty"] == {"easy": 12}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(FIXTURE[0]) + "\n\n{not json\n" + json.dumps({"messages": []}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    p = _cli(str(bad), str(empty), "--no-progress", base_dir=base_dir)
    assert p.returncode == 1
    assert f"{bad}:3: <line>: invalid_json" in p.stderr
    assert f"{bad}:4: messages: empty_messages" in p.stderr
    assert f"{empty}:0: <line>: empty: file has no examples" in p.stderr
    assert "examples 1 from 4 lines" in p.stdout  # the good line is still analysed

    p = _cli(str(tmp_path / "missing.jsonl"), base_dir=base_dir)
    assert p.returncode == 1 and "missing.jsonl: file does not exist" in p.stderr


def test_near_index_capacity_bounds_memory():
    idx = NearDupIndex(capacity=2)
    assert idx.add(1, idx.signature("one two three four")) and idx.add(2, idx.signature("five six seven eight"))
    assert not idx.add(3, idx.signature("nine ten eleven twelve")) and idx.full and len(idx) == 2


def test_encoding_anomalies(tmp_path):
    raw = ("\ufeff" + json.dumps(chat("caf\u00c3\u00a9 au lait", "zero\u200bwidth"), ensure_ascii=False) + "\r\n"
           + json.dumps(chat("broken \ud83d escape", "replacement \ufffd here")) + "\r\n")
    path = tmp_path / "enc.jsonl"
    path.write_bytes(raw.encode("utf-8"))
    r = analyze_paths([path], None, AnalysisSettings(), progress=False)["files"][0]
    assert r["ok"] and r["examples"] == 2
    assert r["anomalies"]["counts"] == {"bom": 1, "crlf": 2, "mojibake": 1, "zero_width": 1, "lone_surrogate": 1,
                                        "replacement_char": 1}
    assert {(x["line"], x["kind"]) for x in r["anomalies"]["examples"]} == {
        (1, "bom"), (1, "mojibake"), (1, "zero_width"), (2, "lone_surrogate"), (2, "replacement_char")}
    assert r["tokens"]["tokenized"] == 0  # no tokenizer: token figures are not measured
