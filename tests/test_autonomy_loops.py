"""The curriculum optimizer, the adversarial miner and the self-correction loop (issue 9, part B).

Real components: the model registry is real SQLite through ``foundation.model_db``, the miner probes
a real inference server subprocess serving the tiny model over HTTP on 127.0.0.1, and the daemons
run through their entry scripts (``--once --json``) where the command line is what is tested.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.model_db import ModelDB
from foundation.paths import Paths
from foundation.status_io import write_status
from tests.helpers.inference_server import ServerProcess, deploy_version, free_port, make_base_dir

REPO = Path(__file__).resolve().parents[1]
LEVELS = ("easy", "medium", "hard", "expert")


def make_base(root: Path, autonomy: dict | None = None, **sections) -> Path:
    paths = Paths.from_base(root).ensure()
    paths.config_file.write_text(json.dumps({"autonomy": autonomy or {}, **sections}))
    return paths.base


def record_evals(base: Path, points: list[tuple[int, dict[str, float]]], source=lambda step: "train.jsonl",
                 n: int = 40) -> None:
    """One checkpoint + evaluation per (global step, {level: accuracy})."""
    db = ModelDB.for_base(base)
    for step, accs in points:
        ck = base / "models" / "checkpoints" / "job" / f"step-{step:08d}"
        db.register_checkpoint(ck, step, "job", source(step))
        by = {lv: {"n": n, "correct": round(a * n), "accuracy": a} for lv, a in accs.items()}
        db.record_evaluation(ck, "syllo-v2", sum(accs.values()) / len(accs), by, n * len(accs))
    db.close()


def run_entry(script: str, base: Path, timeout: float = 120) -> tuple[int, dict, str]:
    p = subprocess.run([sys.executable, str(REPO / "monitoring" / script), "--base-dir", str(base), "--once", "--json"],
                       cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(p.stdout) if p.stdout.strip() else {}
    except json.JSONDecodeError:
        doc = {}
    return p.returncode, doc, p.stderr


def curriculum_status(base: Path) -> dict:
    from monitoring.autonomy.curriculum import CurriculumOptimizer
    return CurriculumOptimizer(base).run(once=True)


# --------------------------------------------------------------------------- curriculum
def test_learning_progress_weights_the_fastest_rising_level(tmp_path):
    base = make_base(tmp_path / "b", {"curriculum_arms": ["learning_progress", "uniform"]})
    record_evals(base, [(100 * i, {"easy": 0.60 + 0.01 * i, "medium": 0.45 + 0.08 * i,
                                   "hard": 0.50, "expert": 0.50 - 0.005 * i}) for i in range(1, 6)])
    doc = curriculum_status(base)
    mix = doc["arms"]["learning_progress"]["mix"]
    assert max(mix, key=mix.get) == "medium" and mix["medium"] > 0.6, mix
    assert all(mix[lv] >= 0.1 / 4 - 1e-3 for lv in LEVELS), "epsilon exploration keeps every level"
    slopes = doc["evidence"]["slopes_per_1k"]
    # chance-corrected (acc - 0.5) / 0.5: 0.08 raw per 100 steps is 1.6 corrected per 1000
    assert slopes["medium"] == pytest.approx(1.6, abs=0.01)
    assert doc["methods"]["learning_progress"]["window"] == 5 and "1707.00183" in doc["methods"]["learning_progress"]["paper"]
    assert doc["strategy"] in ("learning_progress", "uniform") and doc["batch_tag"].startswith(f"ab-{doc['strategy']}-")
    assert doc["mix"] == doc["arms"][doc["strategy"]]["mix"]


def test_learning_progress_ignores_guess_flips_at_chance(tmp_path):
    """A level whose raw accuracy jumps between answer-balance values (always "invalid" then always
    "valid") has not learned anything: it gets no learning-progress weight, and while no level has
    left chance the starting (easy-heavy) mix holds."""
    base = make_base(tmp_path / "b", {"curriculum_arms": ["learning_progress", "uniform"],
                                      "datagen_default_mix": {"easy": 0.8, "medium": 0.2}})
    record_evals(base, [(100 * i, {"easy": 0.50, "medium": 0.50, "hard": (0.375, 0.5)[i % 2],
                                   "expert": (0.3, 0.5)[i % 2]}) for i in range(1, 6)])
    doc = curriculum_status(base)
    mix = doc["arms"]["learning_progress"]["mix"]
    assert mix["easy"] == pytest.approx(0.8, abs=1e-3) and mix["hard"] == 0.0, mix
    assert all(s in (0, None) for s in doc["evidence"]["slopes_per_1k"].values())
    # once easy leaves chance it is the level that gets the weight, not the flipping ones
    record_evals(base, [(100 * i, {"easy": 0.5 + 0.04 * (i - 5), "medium": 0.50, "hard": (0.375, 0.5)[i % 2],
                                   "expert": 0.5}) for i in range(6, 11)])
    mix = curriculum_status(base)["arms"]["learning_progress"]["mix"]
    assert max(mix, key=mix.get) == "easy" and mix["hard"] < 0.05, mix


def test_difficulty_filter_aims_near_half(tmp_path):
    base = make_base(tmp_path / "b", {"curriculum_arms": ["difficulty_filter", "uniform"]})
    record_evals(base, [(100, {"easy": 0.95, "medium": 0.75, "hard": 0.10, "expert": 0.10})])
    doc = curriculum_status(base)
    mix = doc["arms"]["difficulty_filter"]["mix"]
    rates = {lv: doc["evidence"]["pass_rates"][lv]["corrected"] for lv in LEVELS}
    assert rates["easy"] == pytest.approx(0.9) and rates["hard"] == 0.0  # chance-corrected
    assert max(mix, key=mix.get) == "medium"
    expected_pass = sum(mix[lv] * rates[lv] for lv in LEVELS)
    assert abs(expected_pass - 0.5) < 0.1, (mix, expected_pass)
    assert "2504.03380" in doc["methods"]["difficulty_filter"]["paper"]


def test_ab_rule_switches_only_on_sufficient_evidence():
    from monitoring.autonomy.curriculum import ab_decision

    def ivs(arm, rates):
        return [{"arm": arm, "steps": 100, "rate_per_1k": r} for r in rates]
    arms = ["learning_progress", "uniform"]
    clear = ivs("learning_progress", [2.0, 2.2, 1.8, 2.1]) + ivs("uniform", [0.1, -0.2, 0.3, 0.0])
    assert ab_decision(clear[:2] + clear[4:], arms, 3, 1.64, 20)["winner"] is None  # too few intervals
    v = ab_decision(clear, arms, 3, 1.64, 20)
    assert v["winner"] == "learning_progress" and v["stats"]["uniform"]["n"] == 4
    assert v["equal_steps"] == 400 and v["stats"]["learning_progress"]["gain_at_equal_steps"] == pytest.approx(0.81, abs=1e-3)
    noisy = ivs("learning_progress", [1.0, -1.0, 1.2, -0.8]) + ivs("uniform", [0.9, -1.1, 1.0, -0.9])
    assert ab_decision(noisy, arms, 3, 1.64, 20)["winner"] is None
    assert ab_decision(noisy, arms, 3, 1.64, 4)["rule"].startswith("budget")


def test_ab_attributes_gains_through_the_registry_and_switches(tmp_path):
    base = make_base(tmp_path / "b", {"curriculum_ab_min_intervals": 2})
    # batches alternate; accuracy rises on learning-progress batches, stays flat on uniform ones
    arm_of = {k: ("learning_progress" if (k // 2) % 2 == 0 else "uniform") for k in range(12)}
    acc, points = 0.7, []  # past chance (40 items a level: a guesser stays below 0.63 at 95%)
    for k in range(12):
        acc += 0.03 if arm_of[k] == "learning_progress" else 0.0
        points.append((100 * (k + 1), {lv: acc for lv in LEVELS}))
    record_evals(base, points, source=lambda step: f"datagen-ab-{arm_of[step // 100 - 1]}-{(step // 100 - 1) // 2 + 1:04d}"
                                                   f"-20250101T000000-s{step}.jsonl")
    doc = curriculum_status(base)
    stats = doc["ab"]["current"]["stats"]
    assert stats["learning_progress"]["mean_gain_per_1k"] == pytest.approx(0.3, abs=1e-6)
    assert stats["uniform"]["mean_gain_per_1k"] == pytest.approx(0.0, abs=1e-6)
    assert doc["ab"]["state"] == "decided" and doc["ab"]["decided"]["winner"] == "learning_progress"
    assert doc["strategy"] == "learning_progress" and doc["batch_tag"] == "ab-learning_progress-0007"


def test_ab_ignores_intervals_before_learning_starts(tmp_path):
    """At chance every interval gains nothing on both arms (zero variance); the one in which the model
    happens to escape chance must not decide the test on its own."""
    base = make_base(tmp_path / "b", {"curriculum_ab_min_intervals": 2})
    arm_of = {k: ("learning_progress" if k % 2 == 0 else "uniform") for k in range(10)}
    accs = [0.5] * 9 + [0.75]  # flat at chance, then learning starts on a uniform batch
    record_evals(base, [(100 * (k + 1), {lv: accs[k] for lv in LEVELS}) for k in range(10)],
                 source=lambda step: f"datagen-ab-{arm_of[step // 100 - 1]}-{step // 100:04d}-20250101T000000-s{step}.jsonl")
    doc = curriculum_status(base)
    ab = doc["ab"]
    assert ab["at_chance"] == 8 and ab["intervals"] == 1, ab
    assert ab["current"]["stats"]["uniform"]["n"] == 1 and ab["current"]["stats"]["learning_progress"]["n"] == 0
    assert ab["state"] == "collecting" and ab["decided"] is None


def test_bad_inputs_give_a_clear_status_and_exit_zero(tmp_path):
    base = make_base(tmp_path / "b", inference={"port": free_port()})  # nothing listens there
    status = base / "status"
    (status / "automated_testing.json").write_text('{"suite_version": ')
    (status / "adversarial_mining.json").write_text("[1, 2]")
    rc, doc, err = run_entry("curriculum_optimizer.py", base)
    assert rc == 0, err
    joined = " ".join(doc["inputs"])
    assert "automated_testing.json: malformed JSON at line 1" in joined and "adversarial_mining.json: expected a JSON object" in joined
    assert doc["mix"] and doc["last_error"] is None  # the starting mix, not a crash
    rc, doc, err = run_entry("self_correction_loop.py", base)
    assert rc == 0 and "adversarial_mining.json: expected a JSON object" in " ".join(doc["inputs"]), err
    rc, doc, err = run_entry("adversarial_miner.py", base)
    assert rc == 0 and doc["server"]["reachable"] is False and "retrying" in doc["mining"], err


# --------------------------------------------------------------------------- adversarial miner
@pytest.fixture(scope="module")
def served_base(tmp_path_factory, tiny_model_dir):
    port = free_port()
    base = make_base_dir(tmp_path_factory.mktemp("miner") / "base", tiny_model_dir, {
        "inference": {"port": port}, "evaluation": {"max_new_tokens": 6},
        "autonomy": {"miner_probe_size": 8, "miner_examples_per_pattern": 3, "miner_max_patterns": 3,
                     "curriculum_levels": ["easy", "medium"]}})
    deploy_version(tiny_model_dir, base, "v-miner", make_current=True, global_step=3)
    srv = ServerProcess(base, port=port)
    try:
        srv.wait_ready()
        yield base
    finally:
        srv.stop()


def suite_fps(base: Path) -> set[str]:
    from monitoring.autonomy.patterns import suite_fingerprints
    from trainer.config.loader import load_config
    return suite_fingerprints(Paths.from_base(base), load_config(base_dir=base))


def test_miner_probes_fresh_puzzles_and_queues_failing_patterns(served_base):
    from syllo.suite import contains_validation_items
    rc, doc, err = run_entry("adversarial_miner.py", served_base, timeout=300)
    assert rc == 0, err
    probe = doc["probe"]
    assert probe["n"] == 8 and set(probe["by_difficulty"]) == {"easy", "medium"}
    failing = {g["key"] for g in probe["by_pattern"] if g["correct"] < g["n"]}
    assert failing, "the untrained tiny model fails most puzzles"
    assert all(0.0 <= g["accuracy"] <= 1.0 for g in probe["by_pattern"])
    mined = sorted((served_base / "data" / "adversarial_examples").glob("adv-*.jsonl"))
    assert len(mined) == 1 and doc["last_mined"]["file"] == f"data/adversarial_examples/{mined[0].name}"
    records = [json.loads(ln) for ln in mined[0].read_text().splitlines()]
    assert len(records) == doc["examples_mined_total"] > 0
    targeted = [r for r in records if r["metadata"]["source_kind"] == "adversarial"]
    replay = [r for r in records if r["metadata"]["source_kind"] == "replay"]
    assert targeted and len(replay) == len(targeted) == len(records) / 2  # autonomy.replay_ratio 1.0
    assert {r["metadata"]["mined_from"] for r in targeted} <= failing
    # replayed items are answer-balanced, so the file never teaches "always answer X"
    assert len({r["metadata"]["answer"] for r in replay}) > 1
    assert set(doc["last_mined"]["patterns"]) <= {h["key"] for h in doc["hardest_patterns"]}
    queued = served_base / doc["last_mined"]["queued_as"]
    assert queued.parent.name == "high" and queued.read_bytes() == mined[0].read_bytes()
    assert contains_validation_items(records, suite_fps(served_base)) == []


# --------------------------------------------------------------------------- self-correction
def test_self_correction_flags_logs_and_corrects(tmp_path):
    import random

    from monitoring.autonomy.data_quality import computed_answer
    from syllo.construction import make_puzzle
    from syllo.puzzles import render_record
    from syllo.suite import contains_validation_items, load_suite, resolve_suite_dir
    base = make_base(tmp_path / "b", {"selfcorrect_per_pattern": 2}, profile={"name": "emoji_think"})
    good = [render_record(make_puzzle(random.Random(i), "easy"), "plain") for i in range(3)]
    wrong = json.loads(json.dumps(good[1]))
    wrong["messages"][1]["content"] = {"valid": "invalid", "invalid": "valid"}.get(good[1]["metadata"]["answer"], "valid")
    user = base / "queue" / "recently_completed" / "user.jsonl"
    user.write_text("".join(json.dumps(r) + "\n" for r in [good[0], wrong, good[2], good[0]]))
    suite = load_suite(resolve_suite_dir(base), verify=False)
    failed = suite.items[:3]
    db = ModelDB.for_base(base)
    ck = base / "models" / "checkpoints" / "job" / "step-00000010"
    db.register_checkpoint(ck, 10, "job", "user.jsonl")
    db.record_evaluation(ck, suite.version, 0.4, {}, 10, details={"failures": [
        {"index": it.index, "id": it.meta["id"], "difficulty": it.difficulty, "expected": it.answer, "got": "maybe"}
        for it in failed]})
    db.close()
    write_status(base / "status" / "adversarial_mining.json", {"probe": {"id": 1, "at": "x"}, "recent_failures": [
        {"key": "medium|all+no|judge:no|3", "id": "p1", "expected": "valid", "got": "invalid"}]})

    rc, doc, err = run_entry("self_correction_loop.py", base)
    assert rc == 0 and doc["last_error"] is None, err
    flags = [json.loads(ln) for ln in (base / "data" / "flagged_examples" / "user.flagged.jsonl").read_text().splitlines()]
    assert [(f["line"], f["reason"]) for f in flags] == [(2, "wrong_answer"), (4, "duplicate")]
    assert flags[0]["computed"] == good[1]["metadata"]["answer"] and flags[0]["file"] == "queue/recently_completed/user.jsonl"
    logs = {p.name.split("-")[0]: json.loads(p.read_text()) for p in (base / "logs" / "error_patterns").glob("*.json")}
    assert logs["evaluation"]["n_failures"] == 3 and logs["probe"]["groups"][0]["key"] == "medium|all+no|judge:no|3"
    assert {e["answered"] for g in logs["evaluation"]["groups"] for e in g["examples"]} == {"maybe"}
    corr = sorted((base / "queue" / "corrections").glob("corr-*.jsonl"))
    assert len(corr) == 1
    records = [json.loads(ln) for ln in corr[0].read_text().splitlines()]
    assert records and contains_validation_items(records, suite_fps(base)) == []
    for r in records:
        reply = r["messages"][-1]["content"]
        assert reply.startswith("<think>") and reply.endswith("Answer: " + computed_answer(r["messages"][0]["content"]))
    assert any(r["metadata"].get("corrects") == "medium|all+no|judge:no|3" for r in records)
    kinds = [r["metadata"]["source_kind"] for r in records]
    assert kinds.count("replay") == kinds.count("correction") > 0  # replayed items carry rationales too
    assert doc["delivery"] == "inbox/high" and (base / doc["last_correction"]["queued_as"]).is_file()
    rc, again, err = run_entry("self_correction_loop.py", base)  # cursors: nothing processed twice
    assert rc == 0 and again["corrections_total"] == doc["corrections_total"], err
    assert len(list((base / "logs" / "error_patterns").glob("*.json"))) == 2
