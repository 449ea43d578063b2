"""Exact-match scoring of suite answers, and recording a result in the model registry.

An item is correct when ``profile.normalize_answer(profile.extract_answer(text))`` equals
``profile.normalize_answer(expected)``; accuracy is reported overall, by difficulty and by puzzle
kind, with every failure (prompt, expected, got) and, when confidences are given, their calibration.
"""
from __future__ import annotations

import os


def render_for_profile(item, profile_name: str) -> dict:
    """The suite item's record for ``profile_name`` (untransformed: the profile adds its framing)."""
    from syllo.puzzles import rerender_record
    return rerender_record(item.record, profile_name, index=item.index)


def prompt_and_expected(rec: dict) -> tuple[list[dict], str]:
    """(the messages before the last assistant turn, that turn's content)."""
    msgs = rec["messages"]
    last_asst = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return [dict(m) for m in msgs[:last_asst]], msgs[last_asst]["content"]


def last_user_text(msgs: list[dict]) -> str:
    return next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")


def score(items, profile, texts: list[str], expected_texts: list[str], prompts_user: list[str],
          confidences: list[float] | None) -> dict:
    """The result dict of generated ``texts`` against ``expected_texts`` for suite ``items``."""
    from monitoring.evaluation.calibration import calibrate
    per: list[dict] = []
    by: dict[str, dict] = {}
    by_kind: dict[str, dict] = {}
    failures: list[dict] = []
    for k, item in enumerate(items):
        got_raw = profile.extract_answer(texts[k])
        got = profile.normalize_answer(got_raw) if got_raw is not None else None
        exp = profile.normalize_answer(expected_texts[k])
        ok = got is not None and got == exp
        d = item.difficulty
        kind = str(item.meta.get("kind", "unknown"))
        for table, key in ((by, d), (by_kind, kind)):
            slot = table.setdefault(key, {"n": 0, "correct": 0})
            slot["n"] += 1
            slot["correct"] += int(ok)
        row = {"index": item.index, "id": item.meta.get("id"), "difficulty": d, "kind": kind, "correct": ok,
               "expected": exp, "got": got}
        if confidences is not None:
            row["confidence"] = confidences[k]
        per.append(row)
        if not ok:
            failures.append({"index": item.index, "id": item.meta.get("id"), "difficulty": d,
                             "prompt": prompts_user[k], "expected": exp, "got": got, "raw": texts[k][:500]})
    for table in (by, by_kind):
        for slot in table.values():
            slot["accuracy"] = slot["correct"] / slot["n"] if slot["n"] else None
    n = len(items)
    n_correct = sum(1 for r in per if r["correct"])
    cal = calibrate([r["confidence"] for r in per], [r["correct"] for r in per]) if confidences is not None else None
    return {"accuracy": n_correct / n if n else None, "n_items": n, "n_correct": n_correct,
            "by_difficulty": by, "by_kind": by_kind, "items": per, "failures": failures, "calibration": cal}


def record_result(db, checkpoint: str | os.PathLike, suite, res: dict) -> int:
    """Store ``res`` as the checkpoint's evaluation on ``suite`` (``ModelDB.record_evaluation``)."""
    details = {"profile": res.get("profile"), "mode": res.get("mode"), "device": res.get("device"),
               "dtype": res.get("dtype"),
               "duration_s": res.get("duration_s"), "n_correct": res.get("n_correct"),
               "by_kind": res.get("by_kind"), "items": res.get("items"), "failures": res.get("failures")}
    return db.record_evaluation(checkpoint, suite.version, res["accuracy"], res["by_difficulty"], res["n_items"],
                                validation_loss=res.get("validation_loss"), calibration=res.get("calibration"),
                                details=details)
